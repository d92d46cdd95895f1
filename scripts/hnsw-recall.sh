#!/bin/sh
# HNSW against exact search (scripts/hnsw-recall.sql) for indexed ontologies of a running
# cluster, each with the mentions of a corpus: a graph built as belink_index builds it, and the
# names dense retrieval asks for (50 per mention at belink.top_k 10).
# usage: scripts/hnsw-recall.sh DIR PORT ONTOLOGY=CORPUS...
set -eu
DIR=${1:?cluster directory}
PORT=${2:?port}
shift 2
for check in "$@"; do
    mentions=$(mktemp)
    target/release/belink-eval mentions --corpus "${check#*=}" > "$mentions"
    chmod a+r "$mentions" # psql runs as the cluster's OS user
    echo
    scripts/cluster.sh psql "$DIR" "$PORT" -v ontology="${check%%=*}" -v mentions="$mentions" \
        -v limit=50 -v queries=300 -f scripts/hnsw-recall.sql 2>&1 | grep -v '^ *$\|^DROP TABLE\|NOTICE'
    rm -f "$mentions"
done
