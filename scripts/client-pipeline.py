"""The peer of belink_annotate: the same job done the way a user would without BeLink.

A Python client pulls the documents, finds mentions with a dictionary (Aho-Corasick over the
ontology's normalized names, leftmost-longest on token boundaries), embeds the mentions with
the same sentence encoder (sentence-transformers, all-MiniLM-L6-v2) when the matched name
belongs to several concepts, picks the one nearest to the mention, and writes the entities back.

usage: client-pipeline.py DSN TABLE ONTOLOGY MODEL_DIR THREADS [RUNS]
The table needs columns id, body and entities (jsonb). Prints one JSON line of timings: the
median of RUNS runs (default 1).
The ontology's names and their embeddings are read from BeLink's catalog, so the comparison
times the per-document work only (set-up is reported apart).
"""
import json
import re
import sys
import time
import unicodedata

import ahocorasick
import numpy as np
import psycopg
import torch
from sentence_transformers import SentenceTransformer

dsn, table, ontology, model_dir, threads = sys.argv[1:6]
runs = int(sys.argv[6]) if len(sys.argv) > 6 else 1
torch.set_num_threads(int(threads))

TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def normalize(text):
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(TOKEN.findall(text))


setup_started = time.perf_counter()
conn = psycopg.connect(dsn)
model = SentenceTransformer(model_dir, device="cpu")
rows = conn.execute(
    "SELECT concept_id, normalized, embedding::text FROM belink.names "
    "WHERE ontology = %s AND kind IN ('preferred', 'exact', 'abbreviation', 'related', 'user') "
    "AND embedding IS NOT NULL AND length(normalized) >= 3",
    (ontology,),
).fetchall()
automaton = ahocorasick.Automaton()
concepts_of = {}
vectors = {}
for concept_id, normalized, embedding in rows:
    concepts_of.setdefault(normalized, set()).add(concept_id)
    vectors.setdefault(concept_id, []).append(np.array(json.loads(embedding), dtype=np.float32))
for normalized in concepts_of:
    automaton.add_word(f" {normalized} ", normalized)
automaton.make_automaton()
setup_seconds = time.perf_counter() - setup_started


def link(body):
    """Entities of one document: (start, end, mention, concept_id) on the normalized text."""
    if not body:
        return []
    tokens = [(m.group(), m.start(), m.end()) for m in TOKEN.finditer(body)]
    haystack = " " + " ".join(normalize(t) for t, _, _ in tokens) + " "
    starts = {}
    position = 1
    for i, (t, _, _) in enumerate(tokens):
        starts[position] = i
        position += len(normalize(t)) + 1
    found = []
    for end, normalized in automaton.iter(haystack):
        # `end` is the index of the match's trailing space: its first token starts at `begin`.
        begin = end - len(normalized)
        if begin in starts:
            first = starts[begin]
            last = first + normalized.count(" ")
            found.append((tokens[first][1], tokens[last][2], normalized))
    found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
    kept, last_end = [], -1
    for f in found:
        if f[0] >= last_end:
            kept.append(f)
            last_end = f[1]
    if not kept:
        return []
    # Only a name shared by several concepts needs the encoder to choose among them.
    ambiguous = [(s, e) for s, e, normalized in kept if len(concepts_of[normalized]) > 1]
    embedded = {}
    if ambiguous:
        vectors_of = model.encode([body[s:e] for s, e in ambiguous], batch_size=32,
                                  normalize_embeddings=True, show_progress_bar=False)
        embedded = dict(zip(ambiguous, vectors_of))
    entities = []
    for s, e, normalized in kept:
        concepts = concepts_of[normalized]
        if len(concepts) == 1:
            best = next(iter(concepts))
        else:
            vector = embedded[(s, e)]
            best = max(concepts, key=lambda c: max(float(v @ vector) for v in vectors[c]))
        entities.append({"start": s, "end": e, "mention": body[s:e], "concept_id": best})
    return entities


def run():
    """One pass over the table: pull, link, write back, commit. Returns (documents, seconds)."""
    conn.execute(f"UPDATE {table} SET entities = NULL")
    conn.commit()
    started = time.perf_counter()
    documents = conn.execute(f"SELECT id, body FROM {table} ORDER BY id").fetchall()
    results = [(json.dumps(link(body)), doc_id) for doc_id, body in documents]
    with conn.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET entities = %s::jsonb WHERE id = %s", results)
    conn.commit()
    return len(documents), time.perf_counter() - started


timings = sorted(run() for _ in range(runs))
documents, seconds = timings[len(timings) // 2]
print(json.dumps({
    "implementation": "python client (psycopg + pyahocorasick + sentence-transformers)",
    "documents": documents,
    "setup_seconds": round(setup_seconds, 2),
    "seconds": round(seconds, 3),
    "documents_per_s": round(documents / seconds),
}))
