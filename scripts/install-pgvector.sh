#!/bin/sh
# Build pgvector from Debian's source package against the system PostgreSQL and install it.
# bookworm has no pgvector binary package, so we add a deb-src entry for trixie, derived from
# the machine's own apt sources (never a host name written here), fetch the source with
# `apt-get source`, and build it with PGXS.
set -eu
PG_CONFIG=${PG_CONFIG:?set PG_CONFIG}
WORK=${1:?usage: install-pgvector.sh <build-dir>}

if [ -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]; then
    echo "pgvector: already installed in $("$PG_CONFIG" --sharedir)"
    exit 0
fi

# The first Debian archive URI the machine already uses (deb822 or one-line format).
debian_uri() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f"
    done
}

SRC_LIST=/etc/apt/sources.list.d/belink-trixie-src.sources
if ! apt-cache showsrc pgvector 2>/dev/null | grep -q '^Package: pgvector'; then
    uri=$(debian_uri | head -n 1)
    if [ -z "$uri" ]; then
        echo "pgvector: no Debian archive URI found in /etc/apt/sources.list*; add a deb-src entry for trixie by hand" >&2
        exit 1
    fi
    echo "pgvector: adding deb-src trixie entry from $uri to $SRC_LIST"
    cat > "$SRC_LIST" <<SRC
Types: deb-src
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -o Dir::Etc::sourcelist="$SRC_LIST" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
fi
# apt-cache showsrc exits 0 even when nothing matched: test what it printed.
if ! apt-cache showsrc pgvector 2>/dev/null | grep -q '^Package: pgvector'; then
    echo "pgvector: the source package is still not visible to apt after adding $SRC_LIST" >&2
    exit 1
fi

rm -rf "$WORK" && mkdir -p "$WORK"
(cd "$WORK" && apt-get source --download-only pgvector && dpkg-source -x --no-check ./pgvector_*.dsc src)
make -C "$WORK/src" PG_CONFIG="$PG_CONFIG" USE_PGXS=1 OPTFLAGS=""
make -C "$WORK/src" PG_CONFIG="$PG_CONFIG" USE_PGXS=1 install
echo "pgvector: installed $(grep default_version "$WORK/src/vector.control")"
