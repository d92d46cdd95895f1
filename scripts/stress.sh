#!/bin/sh
# make stress: load and faults through a throw-away cluster (figures for BENCHMARKS.md).
# usage: scripts/stress.sh DIR PORT    (data from $BELINK_DATA, default ../shared/data)
set -eu
DIR=${1:?cluster directory}
PORT=${2:?port}
DATA=${BELINK_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
EVAL=target/release/belink-eval
CLIENTS=${STRESS_CLIENTS:-16}
SECONDS_RUN=${STRESS_SECONDS:-300}
KILLS=${STRESS_KILLS:-50}

scripts/cluster.sh stop "$DIR"
dir=$(scripts/cluster.sh start "$DIR" "$PORT")
scripts/cluster.sh psql "$DIR" "$PORT" -c 'DROP EXTENSION IF EXISTS belink CASCADE' -c 'CREATE EXTENSION belink CASCADE' 2>/dev/null
mkdir -p "$dir/files" && cp "$DATA/medic/medic_06Jul2012.txt" "$dir/files/" && chmod -R a+rX "$dir/files"
dsn="host=$dir port=$PORT user=postgres"
$EVAL load --dsn "$dsn" "medic=$dir/files/medic_06Jul2012.txt:biosyn" >/dev/null
$EVAL index --dsn "$dsn" --ontology medic >/dev/null
echo "# belink stress, $(date -u +%Y-%m-%d), $(nproc) vCPU, $CLIENTS clients, $SECONDS_RUN s"
echo
echo "## Load without faults"
echo
$EVAL stress --dsn "$dsn" --corpus "$DATA/ncbi-disease/NCBIdevelopset_corpus.txt" --ontology medic \
    --clients "$CLIENTS" --seconds "$SECONDS_RUN"
echo
echo "## Load with the model server killed $KILLS times and backends cancelled, then an annotation job interrupted 20 times"
echo
$EVAL stress --dsn "$dsn" --corpus "$DATA/ncbi-disease/NCBIdevelopset_corpus.txt" --ontology medic \
    --clients "$CLIENTS" --seconds "$SECONDS_RUN" --kill-server "$KILLS" --cancel 100 --annotate-interrupts 20
scripts/cluster.sh stop "$DIR"
