"""The Python peer of encoder-bench: sentence-transformers on the same texts, same threads.

usage: encoder-bench.py MODEL_DIR TEXTS_FILE BATCH[,BATCH...] THREADS [--limit N]
As in encoder-bench, batch B means requests of B texts each (in file order); each request is
one model.encode(request, batch_size=B) call, which sorts its texts by length itself.
"""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, texts_file, batches, threads = sys.argv[1:5]
limit = int(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[5] == "--limit" else None
torch.set_num_threads(int(threads))
texts = [line for line in open(texts_file, encoding="utf-8").read().splitlines() if line.strip()][:limit]
model = SentenceTransformer(model_dir, device="cpu")
model.encode(texts[:8], batch_size=8)
for batch in map(int, batches.split(",")):
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        model.encode(texts[start:start + batch], batch_size=batch, normalize_embeddings=True, show_progress_bar=False)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "implementation": f"sentence-transformers {__import__('sentence_transformers').__version__} (torch {torch.__version__})",
        "threads": threads, "batch": batch, "texts": len(texts), "seconds": round(seconds, 3),
        "names_per_s": round(len(texts) / seconds, 1),
    }))
