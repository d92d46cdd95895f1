#!/usr/bin/env python3
"""NIL mentions for scripts/min-similarity.sql: random letter strings of 1 to 3 words, as
"NIL<TAB>mention" lines.  Usage: gibberish-mentions.py [COUNT] [SEED] > nil.tsv"""
import random
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
letters = "abcdefghijklmnopqrstuvwxyz"
for _ in range(count):
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(rng.randint(1, 3))]
    print("NIL\t" + " ".join(words))
