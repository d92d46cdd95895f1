"""A synthetic UMLS-size Metathesaurus (MRCONSO.RRF) for scale tests, made from real names.

usage: synthetic-umls.py OUT.RRF[.gz] CONCEPTS NAMES SOURCE_NAME_FILE... [--seed N]

The words and their sequences come from the real ontologies' names given (one name per line,
e.g. extracted from MEDIC, HPO, Disease Ontology and CTD): each concept's preferred name is a
walk of a word-bigram model fitted on them, its length drawn from the real lengths; its other
names are variants of the kind ontologies hold (words reordered, a word dropped, a modifier
added, another walk). Concepts get NAMES / CONCEPTS names on average. Rows are English, not
suppressed, in MRCONSO's 18 columns, so `belink_load_ontology(..., 'umls')` reads them as UMLS.
"""
import argparse
import sys
import gzip
import random
from collections import defaultdict

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("concepts", type=int)
parser.add_argument("names", type=int)
parser.add_argument("sources", nargs="+")
parser.add_argument("--seed", type=int, default=1)
options = parser.parse_args()
out_path, concepts, names = options.out, options.concepts, options.names
random.seed(options.seed)

lengths = []
following = defaultdict(list)
starts = []
for path in options.sources:
    for line in open(path, encoding="utf-8"):
        words = line.split()
        if not words or len(words) > 12:
            continue
        lengths.append(len(words))
        starts.append(words[0])
        for a, b in zip(words, words[1:] + ["</s>"]):
            following[a].append(b)
vocabulary = list(following)
modifiers = ["acute", "chronic", "familial", "congenital", "severe", "mild", "recurrent", "juvenile", "adult",
             "bilateral", "primary", "secondary", "type 1", "type 2", "early onset", "late onset"]


def walk():
    length = random.choice(lengths)
    words = [random.choice(starts)]
    while len(words) < length:
        nxt = random.choice(following.get(words[-1]) or ["</s>"])
        if nxt == "</s>":
            if len(words) >= max(1, length - 1):
                break
            nxt = random.choice(vocabulary)
        words.append(nxt)
    return words


def variant(words):
    roll = random.random()
    if roll < 0.3 and len(words) > 1:
        cut = random.randrange(1, len(words))
        return words[cut:] + words[:cut]
    if roll < 0.5 and len(words) > 2:
        drop = random.randrange(len(words))
        return words[:drop] + words[drop + 1:]
    if roll < 0.8:
        return [random.choice(modifiers)] + words
    return walk()


opener = gzip.open if out_path.endswith(".gz") else open
written = 0
extra = names - concepts
with opener(out_path, "wt", encoding="utf-8") as out:
    for c in range(concepts):
        cui = f"C{c:07d}"
        preferred = walk()
        # The remaining names spread over the remaining concepts, about evenly.
        synonyms = extra * (c + 1) // concepts - extra * c // concepts
        atoms = [(" ".join(preferred), "P", "PF", "Y")]
        for _ in range(synonyms):
            atoms.append((" ".join(variant(preferred)), "S", "VO", "N"))
        for i, (text, ts, stt, ispref) in enumerate(atoms):
            aui = f"A{written:08d}"
            out.write(f"{cui}|ENG|{ts}|L{c:07d}|{stt}|S{written:08d}|{ispref}|{aui}||||SYN|PT|{cui}|{text}|0|N||\n")
            written += 1
print(f"{out_path}: {concepts} concepts, {written} names from {len(lengths)} real names "
      f"({len(vocabulary)} words)", file=sys.stderr)
