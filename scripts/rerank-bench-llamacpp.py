"""The llama.cpp peer of rerank-bench: the same prompts through llama-cpp-python, same GGUF,
same threads. 'score' evaluates the prompt and reads the labels' next-token logits (llama.cpp
reuses the KV cache of the prefix a prompt shares with the previous one); 'generate' is
greedy generation of up to 8 tokens.

usage: rerank-bench-llamacpp.py MODEL PROMPTS_JSON THREADS
"""
import json
import sys
import time

import llama_cpp
import numpy as np

model_path, prompts_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = json.load(open(prompts_path))
llm = llama_cpp.Llama(model_path=model_path, n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                      logits_all=False, verbose=False)


def tokens(text):
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


label_ids = {label: tokens(label)[0] for labels in data["labels"] for label in labels}

started = time.perf_counter()
answers = []
for prompt, labels in zip(data["prompts"], data["labels"]):
    llm.eval(tokens(prompt))  # keeps the common prefix of the previous prompt
    logits = np.array(llm.scores[llm.n_tokens - 1])
    answers.append(int(np.argmax([logits[label_ids[l]] for l in labels])))
score_ms = (time.perf_counter() - started) * 1000 / len(data["prompts"])

started = time.perf_counter()
for prompt in data["prompts"]:
    llm.create_completion(prompt, max_tokens=8, temperature=0.0, top_k=1)
generate_ms = (time.perf_counter() - started) * 1000 / len(data["prompts"])

for mode, ms in [("llama.cpp score (prefix reused)", score_ms), ("llama.cpp greedy generation", generate_ms)]:
    print(json.dumps({"mode": mode, "k": data["k"], "threads": threads, "ms_per_mention": round(ms, 1),
                      "implementation": f"llama-cpp-python {llama_cpp.__version__}"}))
