#!/bin/sh
# make scale: BeLink at the size of its largest users' vocabularies, on a throw-away cluster.
# All four ontologies loaded together (MEDIC, CTD diseases, HPO, Disease Ontology), then a
# synthetic UMLS-size Metathesaurus made from their names (scripts/synthetic-umls.py):
# load time, the model server's trigram index (load time, memory), belink_normalize latency
# and the backend's memory growth; the largest backend heap during each load; linking text
# against the synthetic UMLS through the model server's shared mention dictionary.
# usage: scripts/scale.sh DIR PORT   (SCALE_CONCEPTS, SCALE_NAMES: default 3,000,000 / 10,000,000)
#
# scripts/scale.sh DIR PORT dense: dense retrieval at that size, on the cluster the run above left
# (make scale-dense): every synthetic name embedded through the model server (belink_index in two
# sessions, about 8.5 hours on 2 idle Zen 1 EPYC cores, about 3 estimated on Xeon ones; interrupt it and run
# again to resume),
# the HNSW graph built in memory (SCALE_INDEX_MEMORY, default 16GB: about 1.6 kB a vector), then
# HNSW against exact search over belink's own index, and belink_normalize latency and backend
# memory with dense and hybrid retrieval.
set -eu
DIR=${1:?cluster directory}
PORT=${2:?port}
MODE=${3:-load}
# The load mode drops the extension and everything embedded: a misspelt mode must not reach it.
case $MODE in load | dense) ;; *) echo "scale.sh: mode is load or dense, not $MODE" >&2; exit 1 ;; esac
INDEX_MEMORY=${SCALE_INDEX_MEMORY:-16GB}
CONCEPTS=${SCALE_CONCEPTS:-3000000}
NAMES=${SCALE_NAMES:-10000000}
DATA=${BELINK_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
EVAL=target/release/belink-eval
ncbi=$DATA/ncbi-disease/NCBIdevelopset_corpus.txt

scripts/cluster.sh stop "$DIR"
dir=$(scripts/cluster.sh start "$DIR" "$PORT")
psql() { scripts/cluster.sh psql "$DIR" "$PORT" "$@"; }
files=$dir/files
# MODE dense: the synthetic ontology of an earlier run embedded and indexed, then measured.
dense_retrieval() {
    if [ "$(psql -tA -c "SELECT count(*) FROM belink.ontologies WHERE name = 'synthetic'")" != 1 ]; then
        echo "$DIR has no synthetic ontology: run make scale first" >&2
        exit 1
    fi
    echo "# belink dense retrieval at UMLS size, $(date -u +%Y-%m-%d), $(nproc) vCPU, $(free -g | awk '/Mem:/{print $2}') GiB"
    echo
    echo "belink_index('synthetic') in two sessions, resumed where an earlier call stopped; the graph is"
    echo "built with maintenance_work_mem = $INDEX_MEMORY by the session that ends first (its last NOTICE"
    echo "gives its embedding time; the rest of its time is the build):"
    echo
    psql -tA -c "SELECT format('%s of %s names embedded before this call', done, total) FROM belink.index_status WHERE ontology = 'synthetic'"
    # Two sessions share the batches: while one stores its vectors, the model server embeds the
    # other's (16–19 % more texts a second on 2 cores). Whichever ends first builds the graph;
    # the other waits for it.
    index() {
        psql -c "SET belink.request_timeout = '30min'" -c "SET maintenance_work_mem = '$INDEX_MEMORY'" \
            -c '\timing on' -c "CALL belink_index('synthetic')" 2>&1 | grep -v 'names embedded (' || true
    }
    index > "$files/second-index-session.log" &
    second=$!
    index
    wait $second
    grep 'Time:' "$files/second-index-session.log" | sed 's/^/second session: /' || true
    psql -tA -c "SELECT format('%s of %s names embedded; finished at %s', done, total, finished_at) FROM belink.index_status WHERE ontology = 'synthetic'"
    # An interrupted call has no graph to measure: its progress is kept for the next run.
    if [ "$(psql -tA -c "SELECT finished_at IS NOT NULL FROM belink.index_status WHERE ontology = 'synthetic'")" != t ]; then
        echo "belink_index('synthetic') did not finish: run make scale-dense again to resume" >&2
        scripts/cluster.sh stop "$DIR"
        exit 1
    fi
    psql -tA -c "SELECT format('names table %s, its HNSW index %s', pg_size_pretty(pg_total_relation_size('belink.names')),
                     pg_size_pretty(pg_relation_size(('belink.' || quote_ident(belink.embedding_index_name('synthetic')))::regclass)))"
    echo
    echo "HNSW against exact search (belink's own index; 100 NCBI-disease dev mentions):"
    mentions=$files/ncbi-dev-mentions.tsv
    $EVAL mentions --corpus "$ncbi" > "$mentions"
    chmod a+r "$mentions"
    psql -v ontology=synthetic -v mentions="$mentions" -v limit=50 -v queries=100 -v in_place=on \
        -f scripts/hnsw-recall.sql 2>&1 | grep -v '^ *$\|^DROP TABLE\|^DROP VIEW\|NOTICE'
    echo
    echo "belink_normalize of NCBI-disease dev mentions against the synthetic UMLS, dense then hybrid:"
    echo
    peak_backend_heap $EVAL normalize --dsn "$dsn" --corpus "$ncbi" --retrieval dense --ontology synthetic
    peak_backend_heap $EVAL normalize --dsn "$dsn" --corpus "$ncbi" --retrieval hybrid --ontology synthetic | tail -n 3
    echo
    psql -tA -c "SELECT format('model server RSS %s MB', round(rss_mb)) FROM belink_worker_status()"
}

dsn="host=$dir port=$PORT user=postgres"
# Runs "$@" and prints the largest heap (anonymous memory: shared buffers left out) that any
# client backend of the cluster ("[local]": connected through its socket) held meanwhile,
# sampled every second; autovacuum workers and the other children of the postmaster are left out.
peak_backend_heap() {
    postmaster=$(head -1 "$dir/data/postmaster.pid")
    "$@" &
    job=$!
    peak=0
    while kill -0 "$job" 2>/dev/null; do
        for pid in $(pgrep -P "$postmaster" -f '\[local\]'); do
            kb=$(awk '/^Anonymous:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
            if [ -n "$kb" ] && [ "$kb" -gt "$peak" ]; then peak=$kb; fi
        done
        sleep 1
    done
    wait "$job"
    echo
    echo "Largest backend heap meanwhile: $((peak / 1024)) MB"
}
server_indexes() {
    psql -tA -c "SELECT string_agg(format('%s: %s names, %s MB, loaded in %s s', i->>'ontology', i->>'names',
                     round((i->>'memory_mb')::numeric), round((i->>'load_s')::numeric, 1)), '; ')
                 FROM jsonb_array_elements(belink_worker_status_json()->'trigram_indexes') i"
    psql -tA -c "SELECT format('model server RSS %s MB', round(rss_mb)) FROM belink_worker_status()"
}

if [ "$MODE" = dense ]; then
    dense_retrieval
    scripts/cluster.sh stop "$DIR"
    exit 0
fi
psql -c 'DROP EXTENSION IF EXISTS belink CASCADE' -c 'CREATE EXTENSION belink CASCADE' 2>/dev/null
mkdir -p "$files"
for f in medic/medic_06Jul2012.txt ctd-diseases-2017/CTD_diseases.tsv.gz hpo/hp.obo disease-ontology/doid.obo; do
    cp "$DATA/$f" "$files/"
done
chmod -R a+rX "$files"
echo "# belink scale, $(date -u +%Y-%m-%d), $(nproc) vCPU, $(free -g | awk '/Mem:/{print $2}') GiB"
echo
echo "## Four ontologies together"
echo
peak_backend_heap $EVAL load --dsn "$dsn" "medic=$files/medic_06Jul2012.txt" "ctd=$files/CTD_diseases.tsv.gz" \
    "hpo=$files/hp.obo" "doid=$files/doid.obo"
echo
psql -tA -c "SELECT format('%s names in %s ontologies', sum(name_count), count(*)) FROM belink.ontologies"
echo
echo "Lexical belink_normalize (exact + trigram) of NCBI-disease dev mentions, all ontologies, then MEDIC alone:"
echo
$EVAL normalize --dsn "$dsn" --corpus "$ncbi" --retrieval lexical
$EVAL normalize --dsn "$dsn" --corpus "$ncbi" --retrieval lexical --ontology medic | tail -n 1
$EVAL normalize --dsn "$dsn options='-c belink.trigram_search=pg_trgm'" --corpus "$ncbi" --retrieval lexical --ontology medic | tail -n 1
echo
echo "(last row: belink.trigram_search = pg_trgm)"
echo
server_indexes
echo
echo "## A synthetic UMLS: $CONCEPTS concepts, $NAMES names"
echo
psql -tA -c "COPY (SELECT name FROM belink.names) TO STDOUT" > "$files/real-names.txt"
python3 scripts/synthetic-umls.py "$files/MRCONSO.RRF" "$CONCEPTS" "$NAMES" "$files/real-names.txt"
chmod a+r "$files/MRCONSO.RRF"
echo "The model server's trigram index alone, built from the file (belink-eval trigram-probe):"
echo
$EVAL trigram-probe --ontology "$files/MRCONSO.RRF" --corpus "$ncbi"
echo
peak_backend_heap $EVAL load --dsn "$dsn" "synthetic=$files/MRCONSO.RRF:umls"
echo
$EVAL normalize --dsn "$dsn" --corpus "$ncbi" --retrieval lexical --ontology synthetic
$EVAL normalize --dsn "$dsn options='-c belink.trigram_search=pg_trgm'" --corpus "$ncbi" --retrieval lexical --ontology synthetic \
    --limit 20 | tail -n 1
echo
echo "(last row: belink.trigram_search = pg_trgm, the first 20 mentions)"
echo
server_indexes
echo
echo "Linking the NCBI-disease dev abstracts against the synthetic UMLS (lexical retrieval): its"
echo "mention dictionary is above belink.max_dictionary_mb, so the model server builds it once, from"
echo "the names the first session sends, and detects the mentions for every session."
echo
python3 - "$ncbi" > "$files/documents.csv" <<'EOF_PY'
import csv, sys
documents = {}
for line in open(sys.argv[1], encoding="utf-8"):
    parts = line.rstrip("\n").split("|", 2)
    if len(parts) == 3 and parts[1] in ("t", "a"):
        documents.setdefault(parts[0], []).append(parts[2])
writer = csv.writer(sys.stdout)
for doc_id, texts in documents.items():
    writer.writerow([doc_id, " ".join(texts)])
EOF_PY
psql -q -c "DROP TABLE IF EXISTS scale_documents" -c "CREATE TABLE scale_documents (doc_id text, body text)" \
    -c "\\copy scale_documents FROM '$files/documents.csv' WITH (FORMAT csv)"
link_all="SELECT count(*) AS documents, sum(jsonb_array_length(belink_link(body, 'synthetic'))) AS entities FROM scale_documents"
echo "First statement (the dictionary sent and built), then the same again:"
peak_backend_heap psql -c "SET belink.retrieval = 'lexical'" -c '\timing on' -c "$link_all" -c "$link_all"
psql -tA -c "SELECT string_agg(format('%s: %s names, %s MB, loaded in %s s', d->>'ontology', d->>'names',
                 round((d->>'memory_mb')::numeric), round((d->>'load_s')::numeric, 1)), '; ')
             FROM jsonb_array_elements(belink_worker_status_json()->'mention_dictionaries') d"
psql -tA -c "SELECT format('model server RSS %s MB', round(rss_mb)) FROM belink_worker_status()"
scripts/cluster.sh stop "$DIR"
