#!/bin/sh
# Golden SQL tests: pg_regress runs tests/regress/sql/*.sql against a throw-away cluster that
# preloads belink (installed by `make install`) and compares each output with
# tests/regress/expected. On a difference it prints regression.diffs and fails.
#
#   scripts/regress.sh DIR PORT
set -eu
dir=${1:?cluster directory}
port=${2:?port}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_OS_USER=${PG_OS_USER:-postgres}
here=$(cd "$(dirname "$0")/.." && pwd)
pg_regress=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress

scripts/cluster.sh stop "$dir"
rm -rf "$dir"
socket=$(scripts/cluster.sh start "$dir" "$port")
trap 'scripts/cluster.sh stop "$dir"' EXIT
scripts/cluster.sh psql "$dir" "$port" -c 'CREATE DATABASE belink_regress'
# pg_regress writes results/ and regression.diffs into its output directory, which the
# cluster's OS user reads the inputs from too.
out=$socket/regress
rm -rf "$out" && mkdir -p "$out" && cp -r "$here/tests/regress/sql" "$here/tests/regress/expected" "$out/"
[ "$(id -u)" = 0 ] && chown -R "$PG_OS_USER" "$out"
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi; }
if as_owner "$pg_regress" --use-existing --host="$socket" --port="$port" --user=postgres \
        --bindir="$("$PG_CONFIG" --bindir)" --inputdir="$out" --outputdir="$out" \
        --dbname=belink_regress --schedule="$here/tests/regress/schedule"; then
    exit 0
fi
cat "$out/regression.diffs"
# To accept intended changes: cp "$out"/results/*.out tests/regress/expected/
echo "golden SQL tests failed; the outputs are in $out/results" >&2
exit 1
