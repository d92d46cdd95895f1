"""Writes llama.cpp's token ids for a fixed set of strings, the reference the tokenizer rebuilt
from GGUF metadata is tested against (tests/fixtures/smollm2_tokens.json).

    python3 scripts/tokenizer-reference.py .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf tests/fixtures/smollm2_tokens.json
needs llama-cpp-python (the benchmark environment of `make bench` has it).
"""
import json
import sys

import llama_cpp

TEXTS = [
    "Hello world",
    "colorectal adenomas in 1234 patients (FAP)",
    "β-thalassemia and Sjögren’s syndrome",
    "<|im_start|>user\nMention: FAP\nCandidates:\nA. Adenomatous Polyposis Coli\nB. none of these\nAnswer:<|im_end|>\n<|im_start|>assistant\n",
    "  double  spaces\tand tabs\n\nnewlines",
    "A", "B", "Z",
    "16p11.2 deletion, IL-6, 3.5 mg/kg",
]

gguf, out = sys.argv[1:3]
model = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
ids = [model.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in TEXTS]
with open(out, "w") as f:
    json.dump({"produced_by": f"llama-cpp-python {llama_cpp.__version__} (scripts/tokenizer-reference.py)",
               "texts": TEXTS, "ids": ids}, f, ensure_ascii=False)
    f.write("\n")
print(f"{len(TEXTS)} references written to {out}")
