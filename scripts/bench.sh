#!/bin/sh
# make bench: the figures in BENCHMARKS.md, measured on a throw-away cluster through SQL.
# usage: scripts/bench.sh DIR PORT   (data from $BELINK_DATA, default ../shared/data)
set -eu
DIR=${1:?cluster directory}
PORT=${2:?port}
DATA=${BELINK_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
EVAL=target/release/belink-eval

if [ ! -d "$DATA" ]; then
    echo "bench: no data directory $DATA (set BELINK_DATA to the folder holding medic/, hpo/, ncbi-disease/...)" >&2
    exit 1
fi

scripts/cluster.sh stop "$DIR"
dir=$(scripts/cluster.sh start "$DIR" "$PORT")
scripts/cluster.sh psql "$DIR" "$PORT" -c 'DROP EXTENSION IF EXISTS belink CASCADE' -c 'CREATE EXTENSION belink CASCADE' 2>/dev/null
# The server reads ontology files itself: give it copies it can reach.
files=$dir/files
mkdir -p "$files"
for f in medic/medic_06Jul2012.txt ctd-diseases-2017/CTD_diseases.tsv.gz hpo/hp.obo disease-ontology/doid.obo; do
    if [ -f "$DATA/$f" ]; then cp "$DATA/$f" "$files/"; else echo "bench: missing $DATA/$f" >&2; fi
done
chmod -R a+rX "$files"
dsn="host=$dir port=$PORT user=postgres"

echo "# belink bench, $(date -u +%Y-%m-%d), $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GiB,"
echo "# PostgreSQL $(scripts/cluster.sh psql "$DIR" "$PORT" -tA -c 'SHOW server_version'), release build"
echo
echo "## Loading ontologies (belink_load_ontology, wall time)"
echo
set --
[ -f "$files/medic_06Jul2012.txt" ] && set -- "$@" "medic=$files/medic_06Jul2012.txt"
[ -f "$files/CTD_diseases.tsv.gz" ] && set -- "$@" "ctd2017=$files/CTD_diseases.tsv.gz"
[ -f "$files/hp.obo" ] && set -- "$@" "hpo=$files/hp.obo"
[ -f "$files/doid.obo" ] && set -- "$@" "doid=$files/doid.obo"
$EVAL load --dsn "$dsn" "$@"
echo
echo "## Lexical candidate retrieval (belink_candidates: exact + trigram)"
echo
ncbi=$DATA/ncbi-disease/NCBIdevelopset_corpus.txt
gsc=$DATA/gscplus/GSCplus_dev_gold.tsv
[ -f "$ncbi" ] && $EVAL retrieval --dsn "$dsn" --corpus "$ncbi" --ontology medic --k 1,5,10 --retrieval lexical
[ -f "$gsc" ] && $EVAL retrieval --dsn "$dsn" --corpus "$gsc" --ontology hpo --k 1,5,10 --retrieval lexical | tail -n 1
echo
echo "## Embedding an ontology (CALL belink_index, default encoder all-MiniLM-L6-v2)"
echo
$EVAL index --dsn "$dsn" --ontology medic
$EVAL index --dsn "$dsn" --ontology hpo | tail -n 1
echo
echo "## Hybrid candidate retrieval (exact + trigram + dense, reciprocal-rank fusion)"
echo
[ -f "$ncbi" ] && $EVAL retrieval --dsn "$dsn" --corpus "$ncbi" --ontology medic --k 1,5,10 --retrieval hybrid
[ -f "$gsc" ] && $EVAL retrieval --dsn "$dsn" --corpus "$gsc" --ontology hpo --k 1,5,10 --retrieval hybrid | tail -n 1
echo
echo "## HNSW against exact search (scripts/hnsw-recall.sql: the graph belink_index builds, the names retrieval asks for)"
echo
set --
[ -f "$ncbi" ] && set -- "$@" "medic=$ncbi"
[ -f "$gsc" ] && set -- "$@" "hpo=$gsc"
scripts/hnsw-recall.sh "$DIR" "$PORT" "$@"
echo
echo "## belink_normalize, one client: latency per call and mentions/s, one per call and in arrays"
echo
[ -f "$ncbi" ] && $EVAL normalize --dsn "$dsn" --corpus "$ncbi" --ontology medic --retrieval hybrid
[ -f "$ncbi" ] && $EVAL normalize --dsn "$dsn" --corpus "$ncbi" --ontology medic --retrieval lexical | tail -n 1
[ -f "$gsc" ] && $EVAL normalize --dsn "$dsn" --corpus "$gsc" --ontology hpo --retrieval hybrid | tail -n 1
echo
echo "## Memory: the model server and 16 backends that called belink_embed"
echo
$EVAL memory --dsn "$dsn" --connections 16
echo
echo "## Mention dictionaries (built per backend on first use; belink_dictionary_stats)"
echo
scripts/cluster.sh psql "$DIR" "$PORT" -c "SELECT ontology, names, patterns, round(memory_bytes / 1048576.0, 1) AS memory_mb, round(build_ms::numeric) AS build_ms FROM belink_dictionary_stats('medic') UNION ALL SELECT ontology, names, patterns, round(memory_bytes / 1048576.0, 1), round(build_ms::numeric) FROM belink_dictionary_stats('hpo')"
echo
# Distinct documents only: the batched forms look each distinct mention up once, so repeated
# copies of a corpus would flatter them.
train=$DATA/ncbi-disease/NCBItrainset_corpus.txt
for corpus in "$ncbi" "$train"; do
    [ -f "$corpus" ] || continue
    echo "## Linking throughput: $(basename "$corpus") abstracts against MEDIC, one client"
    echo
    rerank=off
    [ "$corpus" = "$ncbi" ] && rerank=on
    $EVAL throughput --dsn "$dsn" --corpus "$corpus" --ontology medic --runs 5 --rerank $rerank
    echo
    echo "The same job by a Python client (pull rows, link with the same encoder, write back):"
    echo
    HF_HUB_OFFLINE=1 "$PYREF/bin/python" scripts/client-pipeline.py "$dsn dbname=postgres" bench_docs medic "$ENCODER_MODEL" "$(nproc)" 5 2>/dev/null
    echo
done
echo "## belink_annotate over a 1,000,000-row table (lexical, MEDIC): rows/s from the first to the last batch"
echo
$EVAL annotate-scale --dsn "$dsn" --ontology medic --rows 1000000 --batch 1000
echo
scripts/cluster.sh stop "$DIR"

echo
echo "## Encoder throughput (names/s): requests of B names, the server's way vs sentence-transformers"
echo
# The same 1,024 MEDIC names for both, in file order; same thread counts.
names=$(mktemp)
cut -d'|' -f3- "$DATA/medic/medic_06Jul2012.txt" | tr '|' '\n' | head -n 1024 > "$names"
for threads in 1 2; do
    BELINK_THREADS=$threads target/release/encoder-bench "$ENCODER_MODEL" "$names" 1,32,256
    HF_HUB_OFFLINE=1 "$PYREF/bin/python" scripts/encoder-bench.py "$ENCODER_MODEL" "$names" 1,32,256 $threads 2>/dev/null
done
rm -f "$names"

echo
echo "## Set-wise re-ranking (ms per mention), the default model, this machine's cores"
echo
prompts=$(mktemp -d)
python3 scripts/rerank-prompts.py "$ncbi" "$DATA/medic/medic_06Jul2012.txt" "$prompts/prompts.tsv" 16
target/release/rerank-bench "$RERANKER_MODEL" "$prompts/prompts.tsv" --items 16 --ks 5,10,20 --dump-prompts "$prompts" --bf16
for k in 5 10 20; do
    "$PYREF/bin/python" scripts/rerank-bench-llamacpp.py "$RERANKER_MODEL" "$prompts/prompts-k$k.json" "$(nproc)" 2>/dev/null
done
rm -rf "$prompts"
