#!/bin/sh
# make eval: the evaluation report (eval/REPORT.md, plots, errors.md), measured through SQL
# on a throw-away cluster.
#
# usage: scripts/eval.sh DIR PORT [--dataset SPEC]...
# Without --dataset, the defaults use $BELINK_DATA (default ../shared/data):
#   NCBI-disease dev against MEDIC (BioSyn's medic_06Jul2012.txt; NCBI train as the extra dictionary;
#   the span scorer of models/span-scorers trained on NCBI train), GSC+ dev against HPO.
# SPEC: name=N,corpus=PATH,ontology=NAME[,ontology_file=PATH][,format=F][,train=PATH][,adapt=off]
#       [,span_scorer=PATH][,detection_roots=ID+ID]
# BELINK_EVAL_ADAPT=off (make eval EVAL_ADAPT=off) adds adapt=off to the defaults: no encoder
# adaptation, about 40 minutes less. BELINK_EVAL_RERANK_SWEEP=on (make eval EVAL_RERANK_SWEEP=on)
# also writes rerank-sweep.md: the re-ranker zero-shot against tuned at k = 5, 10 and 20; REPORT.md
# carries the last sweep's table, with its date and commit.
# BELINK_EVAL_RERANKER_MODEL=GGUF with BELINK_EVAL_RERANKER_ADAPTER=FILE (make eval
# EVAL_RERANKER=smollm2) re-ranks with that model and adapter (files the server can read).
# (ontology_file and span_scorer must be readable by the server; the defaults are copied where it
# can read them).
set -eu
DIR=${1:?cluster directory}
PORT=${2:?port}
shift 2
OUT=${BELINK_EVAL_OUT:-eval}
DATA=${BELINK_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
EVAL=target/release/belink-eval

scripts/cluster.sh stop "$DIR"
dir=$(scripts/cluster.sh start "$DIR" "$PORT")
scripts/cluster.sh psql "$DIR" "$PORT" -c 'DROP EXTENSION IF EXISTS belink CASCADE' \
    -c 'DROP SCHEMA IF EXISTS belink_eval CASCADE' -c 'CREATE EXTENSION belink CASCADE' 2>/dev/null

# Default datasets, each only when its files are there.
server_copy() {
    mkdir -p "$dir/files" && cp "$1" "$dir/files/" && chmod -R a+rX "$dir/files"
    echo "$dir/files/$(basename "$1")"
}
command="make eval"
adapt=
if [ "${BELINK_EVAL_ADAPT:-on}" = off ]; then
    adapt=,adapt=off
    command="make eval EVAL_ADAPT=off"
fi
reranker=
if [ -n "${BELINK_EVAL_RERANKER_MODEL:-}" ]; then
    reranker="--reranker-model $BELINK_EVAL_RERANKER_MODEL --adapter ${BELINK_EVAL_RERANKER_ADAPTER:?the adapter tuned for BELINK_EVAL_RERANKER_MODEL}"
    command="$command EVAL_RERANKER=${BELINK_EVAL_RERANKER:-$(basename "$BELINK_EVAL_RERANKER_MODEL")}"
fi
hnsw_checks=
if [ $# -eq 0 ]; then
    ncbi_dev=$DATA/ncbi-disease/NCBIdevelopset_corpus.txt
    ncbi_train=$DATA/ncbi-disease/NCBItrainset_corpus.txt
    medic=$DATA/medic/medic_06Jul2012.txt
    gsc_dev=$DATA/gscplus/GSCplus_dev_gold.tsv
    hpo=$DATA/hpo/hp.obo
    if [ -f "$ncbi_dev" ] && [ -f "$medic" ]; then
        spec="name=ncbi-disease-dev,corpus=$ncbi_dev,ontology=medic,ontology_file=$(server_copy "$medic"),format=biosyn$adapt"
        [ -f "$ncbi_train" ] && spec="$spec,train=$ncbi_train"
        spec="$spec,span_scorer=$(server_copy models/span-scorers/medic-ncbi-train.txt)"
        set -- "$@" --dataset "$spec"
        hnsw_checks="$hnsw_checks medic=$ncbi_dev"
    else
        echo "eval: NCBI-disease dev or MEDIC missing under $DATA (need ncbi-disease/NCBIdevelopset_corpus.txt and medic/medic_06Jul2012.txt): skipped" >&2
    fi
    if [ -f "$gsc_dev" ] && [ -f "$hpo" ]; then
        # Phenotypes are what GSC+ annotates: detection covers HPO's Phenotypic abnormality.
        set -- "$@" --dataset "name=gscplus-dev,corpus=$gsc_dev,ontology=hpo,ontology_file=$(server_copy "$hpo"),format=obo,detection_roots=HP:0000118$adapt"
        hnsw_checks="$hnsw_checks hpo=$gsc_dev"
    else
        echo "eval: GSC+ dev or HPO missing under $DATA (need gscplus/GSCplus_dev_gold.tsv and hpo/hp.obo): skipped" >&2
    fi
    if [ $# -eq 0 ]; then
        echo "eval: no dataset to evaluate: set BELINK_DATA or pass --dataset SPEC" >&2
        exit 1
    fi
fi

machine="$(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(. /etc/os-release && echo "$PRETTY_NAME")"
$EVAL evaluate --dsn "host=$dir port=$PORT user=postgres" --out "$OUT" \
    --command-line "$command" --machine "$machine" --date "$(date -u +%Y-%m-%d)" \
    --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" $reranker "$@"

# HNSW against exact search, on the ontologies as the evaluation left them, for the dev mentions.
if [ -n "$hnsw_checks" ]; then
    {
        echo "HNSW against exact search (scripts/hnsw-recall.sql; $command, $(date -u +%Y-%m-%d), $machine)"
        # shellcheck disable=SC2086 # the checks are words
        scripts/hnsw-recall.sh "$DIR" "$PORT" $hnsw_checks
    } > "$OUT/hnsw-recall.txt"
fi
if [ "${BELINK_EVAL_RERANK_SWEEP:-off}" = on ]; then
    $EVAL rerank-sweep --dsn "host=$dir port=$PORT user=postgres" --out "$OUT/rerank-sweep.md" \
        --command-line "$command EVAL_RERANK_SWEEP=on" --machine "$machine" --date "$(date -u +%Y-%m-%d)" \
        --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" $reranker "$@"
fi
scripts/cluster.sh stop "$DIR"
