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

# ggml's AMX matrix kernels (picked on CPUs that report AMX, through the "extra buffer
# types") crash on this machine's CPU with Q4_1 weights (SIGSEGV in ggml_backend_amx_mul_mat,
# llama-cpp-python 0.3.36): keep the regular AVX-512 kernels.
_default_model_params = llama_cpp.llama_cpp.llama_model_default_params


def _model_params_without_extra_buffers():
    params = _default_model_params()
    params.use_extra_bufts = False
    return params


llama_cpp.llama_cpp.llama_model_default_params = _model_params_without_extra_buffers

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
    ids = tokens(prompt)
    # Keep the KV cache of the prefix this prompt shares with the previous one (at least the
    # last token is evaluated, for its logits); eval() drops the cache past n_tokens.
    shared = 0
    for previous, new in zip(llm.input_ids[: llm.n_tokens], ids[:-1]):
        if previous != new:
            break
        shared += 1
    llm.n_tokens = shared
    llm.eval(ids[shared:])
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    answers.append(int(np.argmax([logits[label_ids[l]] for l in labels])))
score_ms = (time.perf_counter() - started) * 1000 / len(data["prompts"])

started = time.perf_counter()
for prompt in data["prompts"]:
    llm.create_completion(prompt, max_tokens=8, temperature=0.0, top_k=1)
generate_ms = (time.perf_counter() - started) * 1000 / len(data["prompts"])

for mode, ms in [("llama.cpp score (prefix reused)", score_ms), ("llama.cpp greedy generation", generate_ms)]:
    print(json.dumps({"mode": mode, "k": data["k"], "threads": threads, "ms_per_mention": round(ms, 1),
                      "implementation": f"llama-cpp-python {llama_cpp.__version__}"}))
