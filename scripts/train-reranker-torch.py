#!/usr/bin/env python3
"""LoRA instruction-tuning of the set-wise re-ranker in PyTorch, on every layer.

Issue 14 asks for training in PyTorch when candle's is more than 2x slower: candle adapting
every layer measured 3.6x slower (BENCHMARKS.md). This trains LoRA on q, k, v, o, gate, up and
down of every layer, with the loss on the answer among the item's options, exactly the
distribution the model server scores (`Reranker::score`):
- letter prompts: the next-token logits of the option labels;
- name prompts (`belink-eval instructions --answer name`; the dump then carries each option's
  answer tokens): the summed log-probability of each option's name and end of turn, the
  prompt run once and the names after its cache. The 135M model learns this form and not the
  letters (BENCHMARKS.md), and the shipped adapter answers with names (make train-reranker).

The examples come tokenized by the server's own tokenizer (`rerank-tune --dump-tokens`), and
the adapter is written in the server's format (`layers.{i}.{projection}.lora_a/_b` in f16,
`lora.scale`, `lora.temperature`, `lora.answer_names`, with --rank-prior `lora.rank_prior`;
Q and K rows in the GGUF file's order), so the server merges it into the same base weights.
The rank prior (belink_core::decision::rank_prior) tells a model trained with the gold at a
random position how often retrieval's order is right. With --served (the training corpus's
mentions again, candidates in retrieval's order: what the server will ask), the calibration
runs on those of them no step trained on, scored as the server scores them (temperature, then
the prior), and fits the temperature with an offset of the prior's "none of these" entry: the
model trained with a tenth of its sets lacking the gold says "none" more surely than it is
right (calibrated on training examples instead, its "none" came at 0.71 on NCBI-disease dev
and was right 0.30). `--reference` writes the trained model's scores of a few prompts' options (without the prior); `--reference-for` writes them for any
adapter in that format without training. A test checks that the served model gives them (crates/belink-models/tests/reranker.rs).

usage: train-reranker-torch.py --model GGUF --tokens TOKENS.jsonl --out ADAPTER.safetensors
           [--checkpoints DIR] [--rank 16] [--alpha 32] [--lr 2e-4] [--batch 4] [--epochs 1]
           [--max-steps N] [--seed 42] [--max-minutes M] [--calibrate 200]
           [--rank-prior RECORDS.jsonl [--served TOKENS.jsonl]] [--reference FILE.json] [--threads 2]
       train-reranker-torch.py --model GGUF --tokens TOKENS.jsonl --reference-for ADAPTER --reference FILE.json

Needs torch, transformers, gguf, accelerate and safetensors (make train-reranker installs them
in .cache/pytrain). Checkpoints every 5 minutes, and at the end of the step under way when
stopped (SIGTERM, Ctrl-C); run again with the same arguments to resume.
Prints one JSON line per 10 steps (loss: the mean of the last 10 steps; chance is about
ln(options)). The reference file holds raw label logits (letters) or raw option log-probabilities
(names), without the temperature.
"""
import argparse
import json
import math
import os
import random
import signal
import sys
import time

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

PROJECTIONS = ["q", "k", "v", "o", "gate", "up", "down"]
MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
           "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
CHECKPOINT_EVERY_S = 300


class LoraLinear(torch.nn.Module):
    """base(x) + scale * B(A(x)), A uniform in +-1/sqrt(in), B zero: training starts at the base."""

    def __init__(self, base, rank, scale, generator):
        super().__init__()
        self.base = base
        bound = 1.0 / math.sqrt(base.in_features)
        self.a = torch.nn.Parameter((torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound)
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = scale

    def forward(self, x):
        return self.base(x) + (x @ self.a.t() @ self.b.t()) * self.scale


def submodule(root, dotted):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def add_adapters(model, rank, alpha, seed):
    generator = torch.Generator().manual_seed(seed)
    adapters = []
    for layer in model.model.layers:
        row = {}
        for name in PROJECTIONS:
            parent_path, attr = MODULES[name].rsplit(".", 1)
            parent = submodule(layer, parent_path)
            wrapped = LoraLinear(getattr(parent, attr), rank, alpha / rank, generator)
            setattr(parent, attr, wrapped)
            row[name] = wrapped
        adapters.append(row)
    return adapters


def permutes_qk(config):
    """Whether llama.cpp stored this architecture's Q/K rows permuted (llama only: Gemma 3
    rotates the two halves, as transformers does)."""
    return config.model_type == "llama"


def gguf_rows(b, heads):
    """llama.cpp's permutation of Q/K output rows (rotary over interleaved pairs): the order
    of the GGUF file, which the server keeps; transformers un-permutes them when it loads."""
    out, rank = b.shape
    return b.reshape(heads, 2, out // heads // 2, rank).swapaxes(1, 2).reshape(out, rank)


def hf_rows(b, heads):
    """The inverse of gguf_rows."""
    out, rank = b.shape
    return b.reshape(heads, out // heads // 2, 2, rank).swapaxes(1, 2).reshape(out, rank)


def prior_of(options, rank_prior):
    """[options] what the server adds to an item's calibrated scores (add_rank_prior): the
    prior of each candidate's position (the deepest one's beyond it), then of "none"."""
    positions = rank_prior[:-1]
    return torch.tensor([positions[min(i, len(positions) - 1)] for i in range(options - 1)] + [rank_prior[-1]])


def fit_served_calibration(rows, rank_prior):
    """The temperature and the offset of the prior's "none" entry that minimise the NLL of
    served items (raw option scores, answer) scored as the server scores them."""
    priors = [prior_of(len(scores), rank_prior) for scores, _ in rows]
    none_of = [torch.nn.functional.one_hot(torch.tensor(len(scores) - 1), len(scores)) for scores, _ in rows]
    log_t, offset = torch.zeros(()), torch.zeros(())

    def nll():
        return sum(torch.nn.functional.cross_entropy(scores / log_t.exp() + prior + offset * none, torch.tensor(answer))
                   for (scores, answer), prior, none in zip(rows, priors, none_of)) / len(rows)

    with torch.enable_grad():  # the caller scores without gradients
        before = nll().item()
        log_t.requires_grad_(True)
        offset.requires_grad_(True)
        optimizer = torch.optim.LBFGS([log_t, offset], max_iter=100, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = nll()
            loss.backward()
            return loss

        optimizer.step(closure)
        return math.exp(log_t.item()), offset.item(), before, nll().item()


def served_choices(rows, rank_prior, temperature, offset):
    """How often the served argmax is right, and how often it is "none" (and then right)."""
    right = nones = nones_right = 0
    for scores, answer in rows:
        served = scores / temperature + prior_of(len(scores), rank_prior)
        served[-1] += offset
        choice = int(served.argmax())
        right += choice == answer
        if choice == len(scores) - 1:
            nones += 1
            nones_right += choice == answer
    return {"right": round(right / len(rows), 3), "none_answers": nones, "none_right": nones_right}


def count_rank_prior(path):
    """Log-probability of the gold's position in retrieval's list, then of "none of these",
    over instruction records written with --gold-position retrieval and no synonyms (a
    training split's mentions as the server shows them); each count plus one."""
    records = [json.loads(l) for l in open(path) if l.strip()]
    if not records:
        sys.exit(f"{path}: no records to count retrieval's rank prior from")
    width = max(r["options"] for r in records)
    counts = [1.0] * width
    for r in records:
        answer = ord(r["answer"]) - ord("A")
        counts[width - 1 if answer == r["options"] - 1 else answer] += 1
    total = sum(counts)
    return [math.log(c / total) for c in counts]


def save_adapter(adapters, config, scale, temperature, by_name, rank_prior, path):
    """The adapters in the server's format, f16, Q/K rows in the GGUF file's order, atomically."""
    tensors = {"lora.scale": torch.tensor([scale]), "lora.temperature": torch.tensor([temperature]),
               "lora.answer_names": torch.tensor([1.0 if by_name else 0.0])}
    if rank_prior:
        tensors["lora.rank_prior"] = torch.tensor(rank_prior)
    for i, row in enumerate(adapters):
        for name, lora in row.items():
            b = lora.b.detach()
            if name == "q" and permutes_qk(config):
                b = gguf_rows(b, config.num_attention_heads)
            elif name == "k" and permutes_qk(config):
                b = gguf_rows(b, config.num_key_value_heads)
            tensors[f"layers.{i}.{name}.lora_a"] = lora.a.detach().half().contiguous()
            tensors[f"layers.{i}.{name}.lora_b"] = b.half().contiguous()
    save_file(tensors, path + ".partial")
    os.chmod(path + ".partial", 0o644)  # safetensors writes 0600; the server's user reads it
    os.replace(path + ".partial", path)


def load_adapter(adapters, path, config):
    """Sets the adapters from a file in the server's format (layers it lacks stay at zero)."""
    from safetensors.torch import load_file
    tensors = load_file(path)
    scale = float(tensors.pop("lora.scale")[0])
    tensors.pop("lora.temperature", None)
    tensors.pop("lora.answer_names", None)
    tensors.pop("lora.rank_prior", None)
    for i, row in enumerate(adapters):
        for name, lora in row.items():
            a, b = tensors.pop(f"layers.{i}.{name}.lora_a", None), tensors.pop(f"layers.{i}.{name}.lora_b", None)
            if a is None:
                lora.b.data.zero_()
                continue
            if name in ("q", "k") and permutes_qk(config):
                b = hf_rows(b.float(), config.num_attention_heads if name == "q" else config.num_key_value_heads)
            lora.a.data, lora.b.data, lora.scale = a.float(), b.float(), scale
    if tensors:
        sys.exit(f"{path}: not a re-ranker adapter of this model ({sorted(tensors)[:3]}...)")


def write_reference(model, label_ids, examples, path):
    """Raw option scores (no temperature) of the first examples, for the candle check."""
    probe = examples[:3]
    with torch.no_grad():
        rows = []
        for e in probe:
            tokens, _, options, answers = e
            if answers is None:
                rows.append({"tokens": tokens, "options": options,
                             "label_logits": label_logits(model, label_ids, [e])[0].tolist()})
            else:
                rows.append({"tokens": tokens, "options": options, "answers": answers,
                             "option_log_probs": answer_log_probs(model, tokens, answers).tolist()})
    with open(path, "w") as f:
        json.dump({"label_ids": label_ids, "examples": rows}, f)


def answer_log_probs(model, prompt, answers):
    """[len(answers)] summed log-probability of each answer's tokens after the prompt: the
    prompt runs once, the answers as one batch after its cache (as the server does)."""
    out = model.model(input_ids=torch.tensor([prompt]), use_cache=True)
    first = torch.log_softmax(model.lm_head(out.last_hidden_state[:, -1]), -1)[0]
    scores = first[torch.tensor([a[0] for a in answers])]
    width = max(len(a) for a in answers) - 1
    if width == 0:
        return scores
    cache = out.past_key_values
    cache.batch_repeat_interleave(len(answers))
    ids = torch.zeros(len(answers), width, dtype=torch.long)
    mask = torch.zeros(len(answers), len(prompt) + width, dtype=torch.long)
    mask[:, : len(prompt)] = 1
    for row, answer in enumerate(answers):
        ids[row, : len(answer) - 1] = torch.tensor(answer[:-1])
        mask[row, len(prompt): len(prompt) + len(answer) - 1] = 1
    hidden = model.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True).last_hidden_state
    log_probs = torch.log_softmax(model.lm_head(hidden), -1)
    later = [log_probs[row, torch.arange(len(a) - 1), torch.tensor(a[1:])].sum() if len(a) > 1 else torch.zeros(())
             for row, a in enumerate(answers)]
    return scores + torch.stack(later)


def option_scores(model, label_ids, batch):
    """[len(batch), most options] raw scores of each example's options, beyond its own masked
    out: label logits, or the log-probabilities of the option names."""
    if batch[0][3] is None:
        return masked(label_logits(model, label_ids, batch), batch)
    width = max(o for _, _, o, _ in batch)
    rows = [answer_log_probs(model, tokens, answers) for tokens, _, _, answers in batch]
    return torch.stack([torch.nn.functional.pad(r, (0, width - len(r)), value=-1e9) for r in rows])


def label_logits(model, label_ids, batch):
    """[len(batch), labels] next-token logits of the labels after each prompt (right-padded)."""
    width = max(len(t) for t, _, _, _ in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, (tokens, _, _, _) in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    last = hidden[torch.arange(len(batch)), torch.tensor([len(t) - 1 for t, _, _, _ in batch])]
    return last @ model.lm_head.weight[label_ids].t()


def masked(logits, batch):
    options = torch.tensor([o for _, _, o, _ in batch])
    keep = torch.arange(logits.shape[1])[None, :] < options[:, None]
    return logits.masked_fill(~keep, -1e9)


def read_tokens(path):
    """The label ids and the examples (tokens, answer, options, answers) of a token dump."""
    lines = [json.loads(l) for l in open(path) if l.strip()]
    return lines[0]["label_ids"], [(l["tokens"], l["answer"], l["options"], l.get("answers")) for l in lines[1:]]


def order_of(epoch, count, seed):
    order = list(range(count))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def fit_temperature(rows):
    """The temperature that minimises the held-out NLL (golden-section search over log T)."""
    def nll(t):
        return sum(torch.nn.functional.cross_entropy(l[None] / t, torch.tensor([a])).item() for l, a in rows) / len(rows)
    low, high = math.log(0.2), math.log(10.0)
    for _ in range(40):
        m1, m2 = low + (high - low) * 0.382, low + (high - low) * 0.618
        if nll(math.exp(m1)) < nll(math.exp(m2)):
            high = m2
        else:
            low = m1
    t = math.exp((low + high) / 2)
    return t, nll(1.0), nll(t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--out")
    p.add_argument("--checkpoints")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-minutes", type=float, default=0)
    p.add_argument("--calibrate", type=int, default=200)
    p.add_argument("--rank-prior", metavar="RECORDS",
                   help="store retrieval's rank prior counted over these instruction records in the adapter")
    p.add_argument("--served", metavar="TOKENS",
                   help="calibrate on these (with --rank-prior): the training corpus's mentions in the order of "
                        "the first examples of --tokens, candidates in retrieval's order")
    p.add_argument("--reference", help="write the trained model's option scores of a few examples here")
    p.add_argument("--reference-for", metavar="ADAPTER",
                   help="no training: the option scores of the base model with this adapter, to --reference")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    if not (args.reference if args.reference_for else args.out):
        p.error("--out is required to train, --reference with --reference-for")
    if args.served and not args.rank_prior:
        p.error("--served calibrates the scores with the rank prior: give --rank-prior")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()
    # Counted now, so that a bad file stops the run before training, not after.
    rank_prior = count_rank_prior(args.rank_prior) if args.rank_prior else None

    label_ids, examples = read_tokens(args.tokens)
    by_name = examples[0][3] is not None
    if any((e[3] is not None) != by_name for e in examples):
        sys.exit(f"{args.tokens}: letter and name examples mixed; one adapter answers one way")
    per_epoch = math.ceil(len(examples) / args.batch)
    total = per_epoch * args.epochs if args.max_steps == 0 else min(per_epoch * args.epochs, args.max_steps)

    directory, name = os.path.split(os.path.abspath(args.model))
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()  # no dropout; gradients still flow
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapters = add_adapters(model, args.rank, args.alpha, args.seed)
    if args.reference_for:
        load_adapter(adapters, args.reference_for, model.config)
        write_reference(model, label_ids, examples, args.reference)
        print(f"reference scores of {args.reference_for} written to {args.reference}", file=sys.stderr)
        return
    trained = [t for row in adapters for l in row.values() for t in (l.a, l.b)]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=args.weight_decay)
    step = 0
    state_path = os.path.join(args.checkpoints, "torch-checkpoint.pt") if args.checkpoints else None
    if state_path and os.path.exists(state_path):
        state = torch.load(state_path)
        if state["arguments"] != [len(examples), by_name, args.rank, args.alpha, args.lr, args.batch, args.seed]:
            sys.exit(f"{state_path}: a checkpoint of another run; remove it to start again")
        for t, saved in zip(trained, state["adapters"]):
            t.data.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    print(f"{len(examples)} examples; {total} steps, {step} done; set-up {time.time() - started:.0f} s", file=sys.stderr)

    def save_checkpoint():
        os.makedirs(args.checkpoints, exist_ok=True)
        torch.save({"arguments": [len(examples), by_name, args.rank, args.alpha, args.lr, args.batch, args.seed],
                    "adapters": [t.detach().clone() for t in trained], "optimizer": optimizer.state_dict(),
                    "step": step}, state_path + ".partial")
        os.replace(state_path + ".partial", state_path)

    # A stop asked for (SIGTERM, Ctrl-C) ends the run after the step under way, with a checkpoint.
    stop_requested = []
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: stop_requested.append(True))

    last_checkpoint, window = time.time(), time.time()
    losses, right, seen, tokens = [], 0, 0, 0
    while step < total:
        order = order_of(step // per_epoch, len(examples), args.seed)
        start = (step % per_epoch) * args.batch
        batch = [examples[i] for i in order[start: start + args.batch]]
        # Letter prompts run as one right-padded batch; name prompts one at a time, gradients
        # summed (each holds the logits of all its option names: batched, 4 of them took 12 GB).
        optimizer.zero_grad()
        batch_loss = 0.0
        for part in [[e] for e in batch] if by_name else [batch]:
            logits = option_scores(model, label_ids, part)
            answers = torch.tensor([a for _, a, _, _ in part])
            loss = torch.nn.functional.cross_entropy(logits, answers, reduction="sum") / len(batch)
            loss.backward()
            batch_loss += loss.item()
            right += int((logits.argmax(1) == answers).sum())
        optimizer.step()
        step += 1
        losses.append(batch_loss)
        seen += len(batch)
        tokens += sum(len(t) for t, _, _, _ in batch)
        if step % 10 == 0 or step == total:
            seconds = time.time() - window
            recent = losses[-10:]
            print(json.dumps({"step": step, "steps_total": total, "loss": round(sum(recent) / len(recent), 4),
                              "right": round(right / seen, 3), "examples_per_s": round(seen / seconds, 2),
                              "tokens_per_s": round(tokens / seconds), "elapsed_s": round(time.time() - started)}),
                  flush=True)
            right, seen, tokens, window = 0, 0, 0, time.time()
        stopping = bool(stop_requested) or (args.max_minutes and time.time() - started >= args.max_minutes * 60)
        if state_path and (stopping or time.time() - last_checkpoint >= CHECKPOINT_EVERY_S):
            save_checkpoint()
            last_checkpoint = time.time()
        if stopping:
            print(f"stopped at step {step} of {total}; run again to resume", file=sys.stderr)
            return
    if state_path:
        save_checkpoint()

    # The adapter is stored in f16 (half the size); what follows (calibration, the reference
    # logits) runs on the rounded weights, which are what the server merges.
    with torch.no_grad():
        for t in trained:
            t.copy_(t.half().float())

    # Calibration on examples no step trained on (the first epoch's unseen tail).
    trained_on = set(order_of(0, len(examples), args.seed)[: min(step, per_epoch) * args.batch])
    temperature = 1.0
    with torch.no_grad():
        if rank_prior:
            print(json.dumps({"rank_prior": [round(math.exp(p), 4) for p in rank_prior]}), flush=True)
        if args.served:
            _, served = read_tokens(args.served)
            if len(served) > len(examples) or (served[0][3] is None) != (examples[0][3] is None):
                sys.exit(f"{args.served}: not the training corpus's mentions in the form of {args.tokens}")
            held_out = [served[i] for i in range(len(served)) if i not in trained_on][: args.calibrate]
            rows = [(option_scores(model, label_ids, [e])[0], e[1]) for e in held_out]
            temperature, offset, before, after = fit_served_calibration(rows, rank_prior)
            print(json.dumps({"calibration_examples": len(held_out), "served": True,
                              "temperature": round(temperature, 4), "none_offset": round(offset, 4),
                              "nll_before": round(before, 4), "nll_after": round(after, 4),
                              "before": served_choices(rows, rank_prior, 1.0, 0.0),
                              "after": served_choices(rows, rank_prior, temperature, offset)}), flush=True)
            rank_prior[-1] += offset
        else:
            held_out = [examples[i] for i in range(len(examples)) if i not in trained_on][: args.calibrate]
            if held_out:
                rows = [(option_scores(model, label_ids, [e])[0], e[1]) for e in held_out]
                temperature, before, after = fit_temperature(rows)
                print(json.dumps({"calibration_examples": len(held_out), "temperature": round(temperature, 4),
                                  "nll_before": round(before, 4), "nll_after": round(after, 4),
                                  "right": round(sum(int(l.argmax() == a) for l, a in rows) / len(rows), 3)}),
                      flush=True)
        save_adapter(adapters, model.config, args.alpha / args.rank, temperature, by_name, rank_prior, args.out)
        if args.reference:
            write_reference(model, label_ids, examples, args.reference)
    print(f"adapter written to {args.out} after {step} steps ({(time.time() - started) / 60:.1f} min)", file=sys.stderr)


if __name__ == "__main__":
    main()
