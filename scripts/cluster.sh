#!/bin/sh
# A throw-away PostgreSQL cluster that preloads belink: used by the demo, the evaluation and
# the end-to-end tests.
#
#   scripts/cluster.sh start DIR PORT    initdb (if needed) and start; prints the data directory
#   scripts/cluster.sh stop DIR          stop it, if running
#   scripts/cluster.sh psql DIR PORT ... psql as the cluster's superuser, extra args passed on
#   scripts/cluster.sh dir DIR           create DIR for the cluster's OS user; print where it is
#
# initdb refuses to run as root, so as root the cluster belongs to the OS user $PG_OS_USER
# (default postgres). If that user cannot reach DIR (a checkout under /root, say), the
# cluster lives in /tmp instead and the script says so.
set -eu
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BINDIR=$("$PG_CONFIG" --bindir)
PG_OS_USER=${PG_OS_USER:-postgres}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

# The directory the cluster really lives in (DIR, or a /tmp fallback).
resolve_dir() {
    mkdir -p "$1"
    dir=$(cd "$1" && pwd)
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$dir" && chown "$PG_OS_USER" "$dir"
        if ! runuser -u "$PG_OS_USER" -- test -w "$dir" 2>/dev/null; then
            fallback=/tmp/belink-cluster-$(echo "$dir" | cksum | cut -d' ' -f1)
            echo "note: $PG_OS_USER cannot reach $dir; using $fallback" >&2
            mkdir -p "$fallback" && chown "$PG_OS_USER" "$fallback"
            dir=$fallback
        fi
    else
        mkdir -p "$dir"
    fi
    echo "$dir"
}

command=${1:?usage: cluster.sh start|stop|psql|dir DIR [PORT]}
dir=$(resolve_dir "${2:?data directory}")
data=$dir/data

case $command in
dir)
    echo "$dir"
    ;;
start)
    port=${3:?port}
    if [ ! -f "$data/PG_VERSION" ]; then
        as_owner "$BINDIR/initdb" --auth=trust --username=postgres --encoding=UTF8 --locale=C.UTF-8 -D "$data" >/dev/null
        cat >> "$data/postgresql.conf" <<CONF
# belink throw-away cluster
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'belink'
CONF
    fi
    if ! as_owner "$BINDIR/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        # Without RUST_BACKTRACE from the caller's shell: pgrx would put Rust backtraces into
        # the DETAIL of errors that users see.
        as_owner env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$BINDIR/pg_ctl" -D "$data" -l "$dir/server.log" -w start >/dev/null
    fi
    echo "$dir"
    ;;
stop)
    if [ -f "$data/PG_VERSION" ] && as_owner "$BINDIR/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_owner "$BINDIR/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    fi
    ;;
psql)
    port=${3:?port}
    shift 3
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres "$@"
    ;;
*)
    echo "unknown command $command" >&2
    exit 2
    ;;
esac
