"""Reference token ids and logits of Gemma 3 270M from Hugging Face transformers, for the test
that our GGUF tokenizer and forward pass compute what it does (crates/belink-models/tests/reranker.rs,
`gemma3_*`). transformers reads the GGUF file itself (its own tokenizer converter, weights
dequantized by gguf-py), so the reference shares no code with ours.

usage: gemma-reference.py GGUF OUT.json     (the PyTorch venv of make train-reranker)
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, out = sys.argv[1:]
directory, name = os.path.split(os.path.abspath(gguf))
tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()

abstract = (
    "Familial adenomatous polyposis (FAP) is an autosomal dominant disease caused by germline "
    "mutations of the APC gene. Patients with FAP develop hundreds to thousands of colorectal "
    "adenomas, and some develop desmoid tumours, osteomas or phaeochromocytoma. "
)
prompt = (
    "<bos><start_of_turn>user\nYou link biomedical mentions to ontology concepts.\n\n"
    "Text: Patients with [FAP] develop hundreds of colorectal adenomas.\nMention: FAP\nCandidates:\n"
    "- Adenomatous Polyposis Coli (also: Familial adenomatous polyposis)\n"
    "- Amyloid Neuropathies, Familial\n- none of these<end_of_turn>\n<start_of_turn>model\n"
)
texts = [
    "Hello world",
    "  two  spaces, tabs\tand\nnew lines\n\n\nend",
    "naïve Ångström ß 𝛼-synuclein 漢字 😀 <0x41> <unk>",
    prompt,
    # Longer than the local layers' window of 512 positions.
    "<bos>" + abstract * 14,
]
reference = {"texts": [], "ids": [], "positions": [], "logit_ids": [], "logits": []}
with torch.no_grad():
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        logits = model(torch.tensor([ids])).logits[0]
        # The last position, and one in the middle (for the long text: beyond the window).
        positions = sorted({len(ids) - 1, len(ids) // 2})
        rows = []
        for position in positions:
            top = logits[position].topk(10).indices.tolist()
            rows.append((top, [logits[position, i].item() for i in top]))
        reference["texts"].append(text)
        reference["ids"].append(ids)
        reference["positions"].append(positions)
        reference["logit_ids"].append([r[0] for r in rows])
        reference["logits"].append([r[1] for r in rows])
        print(f"{len(ids)} tokens; top at the end: {tokenizer.convert_ids_to_tokens(rows[-1][0][:3])}")
with open(out, "w") as f:
    json.dump(reference, f, ensure_ascii=False)
