"""Would a score-level or learned fusion beat rank fusion? A probe over MEDIC and NCBI-disease.

Every source is computed for every concept from what a cluster stores: the cosine of the
mention's embedding with each of the ontology's stored name vectors (exact search), pg_trgm's
similarity of the folded texts, and exact matches. A linear scorer over per-concept features
(best cosine, best trigram similarity, exact match, reciprocal dense and trigram ranks, cosine
of the preferred name, word overlap, number of names, number of children, same last word) is
trained with the candidates' softmax (gold marginalised) on NCBI-disease train, and compared
on dev with the rank fusions belink_tune_fusion chooses from. Results: BENCHMARKS.md,
"Score-level and learned fusion, measured".

Run against a cluster with MEDIC loaded and indexed (`make eval` leaves one), with numpy and
psycopg2 installed:
    python3 scripts/fusion-probe.py "host=.cache/eval port=54331 user=postgres dbname=postgres" \
        ../shared/data/ncbi-disease/NCBItrainset_corpus.txt ../shared/data/ncbi-disease/NCBIdevelopset_corpus.txt
"""
import math
import re
import sys
from collections import defaultdict

import numpy as np
import psycopg2

ONTOLOGY = "medic"
DEPTH = 20  # concepts taken from each of the dense and trigram lists
TRIGRAM_THRESHOLD = 0.3  # pg_trgm's similarity_threshold, as retrieval uses it
RRF_K = 60
FEATURES = ["cosine", "trigram", "exact", "1/dense rank", "1/trigram rank", "cosine of preferred name",
            "word overlap", "log names", "log children", "same last word"]


def canonical(concept_id):
    return re.sub(r"^(MESH|OMIM):", "", concept_id)


def trigrams(text):
    """pg_trgm's trigrams: each alphanumeric word padded with two blanks before, one after."""
    found = set()
    for word in re.findall(r"[^\W_]+", text.lower()):
        padded = "  " + word + " "
        found.update(padded[i:i + 3] for i in range(len(padded) - 2))
    return found


def read_corpus(path):
    """(mention, gold id field) of a PubTator file."""
    for line in open(path, encoding="utf-8"):
        fields = line.rstrip("\n").split("\t")
        if len(fields) == 6 and fields[1].isdigit():
            yield fields[3], fields[5]


class Ontology:
    def __init__(self, cursor):
        cursor.execute("SELECT concept_id, normalized, kind = 'preferred', embedding::text FROM belink.names "
                       "WHERE ontology = %s AND kind <> 'user' ORDER BY name_id", (ONTOLOGY,))
        rows = cursor.fetchall()
        self.names = [r[1] for r in rows]
        self.preferred = np.array([r[2] for r in rows])
        vectors = np.array([[float(x) for x in r[3].strip("[]").split(",")] for r in rows], dtype=np.float32)
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self.concepts = sorted({r[0] for r in rows})
        position = {c: i for i, c in enumerate(self.concepts)}
        self.concept_of = np.array([position[r[0]] for r in rows])
        self.names_of = defaultdict(list)
        for name, concept in enumerate(self.concept_of):
            self.names_of[concept].append(name)
        cursor.execute("SELECT concept_id, alt_ids, parents FROM belink.concepts WHERE ontology = %s AND NOT obsolete",
                       (ONTOLOGY,))
        self.children = np.zeros(len(self.concepts))
        self.ids = [set() for _ in self.concepts]
        for concept_id, alt_ids, parents in cursor.fetchall():
            if concept_id in position:
                self.ids[position[concept_id]] = {canonical(concept_id)} | {canonical(a) for a in alt_ids}
            for parent in parents:
                if parent in position:
                    self.children[position[parent]] += 1
        self.name_trigrams = [trigrams(n) for n in self.names]
        self.trigram_count = np.array([len(t) for t in self.name_trigrams], dtype=np.float32)
        postings = defaultdict(list)
        for name, grams in enumerate(self.name_trigrams):
            for gram in grams:
                postings[gram].append(name)
        self.postings = {g: np.array(p, dtype=np.int32) for g, p in postings.items()}
        self.by_name = defaultdict(list)
        for name, text in enumerate(self.names):
            self.by_name[text].append(name)

    def best_per_concept(self, values):
        best = np.full(len(self.concepts), -1.0, dtype=np.float32)
        np.maximum.at(best, self.concept_of, values)
        return best

    def candidates(self, folded, vector):
        """The concepts any source finds, with their features and each source's rank."""
        cosine = self.vectors @ (vector / np.linalg.norm(vector))
        query = trigrams(folded)
        shared = np.zeros(len(self.names), dtype=np.float32)
        for gram in query:
            if gram in self.postings:
                shared[self.postings[gram]] += 1
        similarity = shared / np.maximum(len(query) + self.trigram_count - shared, 1)
        concept_cosine = self.best_per_concept(cosine)
        concept_trigram = self.best_per_concept(similarity)
        preferred_cosine = self.best_per_concept(np.where(self.preferred, cosine, -1))
        exact = {self.concept_of[n] for n in self.by_name.get(folded, [])}
        dense_rank = {c: r + 1 for r, c in enumerate(np.argsort(-concept_cosine, kind="stable")[:DEPTH])}
        trigram_rank = {c: r + 1 for r, c in enumerate(np.argsort(-concept_trigram, kind="stable")[:DEPTH])
                        if concept_trigram[c] >= TRIGRAM_THRESHOLD}
        words = set(folded.split())
        last_word = folded.split()[-1] if words else ""
        concepts = sorted(set(dense_rank) | set(trigram_rank) | exact)
        rows = []
        for c in concepts:
            overlap = max(len(words & set(self.names[n].split())) / max(len(words | set(self.names[n].split())), 1)
                          for n in self.names_of[c])
            same_last = any(self.names[n].split()[-1:] == [last_word] for n in self.names_of[c])
            rows.append([concept_cosine[c], concept_trigram[c], c in exact,
                         1 / dense_rank[c] if c in dense_rank else 0, 1 / trigram_rank[c] if c in trigram_rank else 0,
                         preferred_cosine[c], overlap, math.log(len(self.names_of[c])),
                         math.log1p(self.children[c]), same_last])
        return concepts, np.array(rows, dtype=np.float64), dense_rank, trigram_rank, exact


def examples(cursor, ontology, path, single_concept_only):
    mentions = list(read_corpus(path))
    texts = sorted({m for m, _ in mentions})
    folded, vectors = {}, {}
    for i in range(0, len(texts), 200):
        chunk = texts[i:i + 200]
        cursor.execute("SELECT t, belink_fold(t) FROM unnest(%s::text[]) t", (chunk,))
        folded.update(dict(cursor.fetchall()))
        cursor.execute("SELECT ordinality, embedding FROM belink_embed_many_real(%s::text[])", (chunk,))
        vectors.update({chunk[o - 1]: np.array(e, dtype=np.float32) for o, e in cursor.fetchall()})
    found, out = {}, []
    for text, field in mentions:
        gold = {canonical(x) for x in re.split(r"[|+]", field) if x.strip()}
        if not gold or (single_concept_only and len(gold) != 1):
            continue
        if text not in found:
            found[text] = ontology.candidates(folded[text], vectors[text])
        concepts, rows, dense_rank, trigram_rank, exact = found[text]
        right = np.array([bool(ontology.ids[c] & gold) for c in concepts])
        out.append((concepts, rows, right, dense_rank, trigram_rank, exact))
    return out


def rank_fusion_right(data, weights):
    """Per mention, whether rank fusion with these weights puts a gold concept first."""
    def score(c, dense_rank, trigram_rank, exact):
        return (weights[0] * (c in exact) / (RRF_K + 1) + weights[1] * (1 / (RRF_K + trigram_rank[c]) if c in trigram_rank else 0)
                + weights[2] * (1 / (RRF_K + dense_rank[c]) if c in dense_rank else 0))
    return np.array([right[int(np.argmax([score(c, d, t, e) for c in concepts]))]
                     for concepts, _, right, d, t, e in data])


def train_linear(data, columns, mean, scale, l2=1e-3, epochs=300, rate=0.05):
    """Adam on the mean negative log of the gold candidates' softmax share."""
    batches = [((rows[:, columns] - mean) / scale, right) for _, rows, right, *_ in data if right.any()]
    weights, m, v = np.zeros(len(columns)), np.zeros(len(columns)), np.zeros(len(columns))
    for step in range(1, epochs + 1):
        gradient = l2 * weights
        for z, right in batches:
            s = z @ weights
            p = np.exp(s - s.max())
            p /= p.sum()
            gold = p * right
            gradient += z.T @ (p - gold / gold.sum()) / len(batches)
        m = 0.9 * m + 0.1 * gradient
        v = 0.999 * v + 0.001 * gradient ** 2
        weights -= rate * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return weights


def main():
    dsn, train_path, dev_path = sys.argv[1:4]
    cursor = psycopg2.connect(dsn).cursor()
    ontology = Ontology(cursor)
    train = examples(cursor, ontology, train_path, single_concept_only=True)
    dev = examples(cursor, ontology, dev_path, single_concept_only=False)
    print(f"{len(train)} train mentions, {len(dev)} dev mentions; gold among the candidates: "
          f"train {np.mean([r.any() for _, _, r, *_ in train]):.3f}, dev {np.mean([r.any() for _, _, r, *_ in dev]):.3f}")
    print("| fusion | train acc@1 | dev acc@1 |\n|---|---:|---:|")
    for label, weights in [("dense alone (exact search)", (0, 0, 1)), ("trigram alone", (0, 1, 0)),
                           ("rank fusion, equal weights", (1, 1, 1)), ("rank fusion, exact 1 trigram 0 dense 1", (1, 0, 1))]:
        print(f"| {label} | {rank_fusion_right(train, weights).mean():.3f} | {rank_fusion_right(dev, weights).mean():.3f} |")
    every_row = np.vstack([rows for _, rows, *_ in train])
    mean, scale = every_row.mean(0), every_row.std(0) + 1e-9
    for label, columns in [("scores: cosine, trigram, exact", [0, 1, 2]),
                           ("scores and ranks", [0, 1, 2, 3, 4]),
                           ("scores and number of names", [0, 1, 2, 7]),
                           ("every feature", list(range(len(FEATURES))))]:
        weights = train_linear(train, columns, mean[columns], scale[columns])
        linear_right = lambda data: np.array([right[int(np.argmax((rows[:, columns] - mean[columns]) / scale[columns] @ weights))]
                                              for _, rows, right, *_ in data])
        print(f"| linear, {label} | {linear_right(train).mean():.3f} | {linear_right(dev).mean():.3f} |")
    print("weights of every feature: " + ", ".join(f"{FEATURES[c]} {w:.2f}" for c, w in zip(columns, weights)))
    combiner, dense = linear_right(dev), rank_fusion_right(dev, (0, 0, 1))
    print(f"dev, every feature against dense alone: right where dense is wrong {np.sum(combiner & ~dense)}, "
          f"the reverse {np.sum(dense & ~combiner)}")


if __name__ == "__main__":
    main()
