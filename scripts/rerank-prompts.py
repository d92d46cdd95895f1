"""Mentions and candidate names for rerank-bench: NCBI-disease dev mentions, each with 20
MEDIC names (those sharing the mention's longest word first, then random ones).

usage: rerank-prompts.py NCBI_DEV MEDIC_DICTIONARY OUT_TSV [COUNT]
"""
import random
import sys

ncbi, medic, out = sys.argv[1:4]
count = int(sys.argv[4]) if len(sys.argv) > 4 else 64
random.seed(1)
names = [line.split("||")[1].split("|")[0].strip() for line in open(medic, encoding="utf-8") if "||" in line]
mentions = [f[3] for f in (line.rstrip("\n").split("\t") for line in open(ncbi, encoding="utf-8")) if len(f) == 6]
with open(out, "w", encoding="utf-8") as f:
    for mention in mentions[:count]:
        word = max(mention.split(), key=len).lower()[:5]
        candidates = [n for n in names if word in n.lower()][:20]
        candidates += random.sample(names, 20 - len(candidates))
        f.write(mention + "\t" + "|".join(candidates) + "\n")
