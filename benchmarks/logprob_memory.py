"""Peak memory of completion log-probs + backward as the vocabulary grows: thinkrl's chunked path against full logits.

    python benchmarks/logprob_memory.py            # ~5 min on 2 cores; writes benchmarks/results_logprob_memory.md

For each vocabulary size V (default 32k, 64k and Qwen's 151,936) a random-init Qwen2 with a tiny hidden size (so
the LM head dominates) computes the log-probs of N x L completion tokens (default 64 x 128, after a 16-token prompt)
and backpropagates their sum, once per method:

  thinkrl            train.logprobs.completion_logprobs as the trainer calls it (optim.logprob_chunk_size = 1024);
  thinkrl, 1024-token chunks
                     the same with the chunk held at 1024 tokens whatever V is (what thinkrl did before the
                     vocabulary-aware cap: one chunk's logits then grow with V);
  naive              `model(...).logits` for the completion positions, float32 `log_softmax`, `gather`;
  TRL selective_log_softmax
                     TRL's `selective_log_softmax` on the same full logits (what TRL used before its fused head);
  TRL fused LM head  TRL 1.16's `add_fused_lm_head` + `fused_lm_head=True`, what its GRPOTrainer now calls (on CPU it
                     scores every position, prompt included, in [4096 tokens x 32768 vocab] tiles).

Each case runs in a fresh process. Memory = that process's peak RSS during the forward + backward (getrusage
ru_maxrss) minus its RSS just before (model, optimiser-free, and inputs already built): the extra memory the
log-prob computation needs. Cases whose estimated need exceeds half the free RAM are skipped (marked).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ["thinkrl", "thinkrl-1024", "naive", "trl-selective", "trl-fused"]
LABELS = {
    "thinkrl": "thinkrl completion_logprobs (chunk 1024, vocabulary-aware cap)",
    "thinkrl-1024": "thinkrl, chunk fixed at 1024 tokens (no cap)",
    "naive": "naive full logits + log_softmax",
    "trl-selective": "TRL selective_log_softmax on full logits",
    "trl-fused": "TRL 1.16 fused LM head (GRPOTrainer's path)",
}


def build(vocab: int, hidden: int, layers: int, rows: int, prompt: int, completion: int):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=prompt + completion + 8,
                         tie_word_embeddings=True, eos_token_id=vocab - 1, pad_token_id=vocab - 1, bos_token_id=None)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.use_cache = False
    input_ids = torch.randint(0, vocab - 1, (rows, prompt + completion))  # distinct random prompts: no sharing
    attention_mask = torch.ones_like(input_ids)
    return model, input_ids, attention_mask


def run_case(method: str, vocab: int, args) -> dict:
    """In this (fresh) process: build, then measure one forward + backward."""
    import torch

    model, input_ids, attention_mask = build(vocab, args.hidden, args.layers, args.rows, args.prompt, args.completion)
    width = args.completion
    if method in ("thinkrl", "thinkrl-1024"):
        import train.logprobs as logprobs

        if method == "thinkrl-1024" and hasattr(logprobs, "MAX_CHUNK_LOGITS"):
            logprobs.MAX_CHUNK_LOGITS = float("inf")

        def compute():
            lp, _ = logprobs.completion_logprobs(model, input_ids, attention_mask, width, temperature=1.0, chunk_size=1024)
            return lp
    elif method in ("naive", "trl-selective"):
        from train.logprobs import position_ids_from_mask

        if method == "trl-selective":
            from trl.trainer.utils import selective_log_softmax

        def compute():
            logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                           logits_to_keep=width + 1).logits[:, :-1].float()  # [N, L, V]
            targets = input_ids[:, -width:]
            if method == "trl-selective":
                return selective_log_softmax(logits, targets)
            return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    elif method == "trl-fused":
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))

        def compute():
            labels = input_ids.clone()
            labels[:, :-width] = -100
            return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True).log_probs[:, -width:]
    else:
        raise ValueError(method)
    gc.collect()
    before_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    baseline = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    logprobs = compute()
    logprobs.sum().backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grad_ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    return {"extra_mib": peak - baseline, "setup_peak_above_baseline": peak <= before_peak, "seconds": seconds,
            "logprob_sum": float(logprobs.detach().sum()), "grads_finite": bool(grad_ok)}


def estimate_naive_mib(vocab: int, args) -> float:
    """Three [N, L, V] float32 tensors alive at once (logits, log-softmax, its gradient)."""
    return 3 * args.rows * args.completion * vocab * 4 / 2**20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", default="32768,65536,151936", help="comma-separated vocabulary sizes")
    p.add_argument("--rows", type=int, default=64, help="N completions")
    p.add_argument("--completion", type=int, default=128, help="L completion tokens per row")
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens per row")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--case", nargs=2, metavar=("METHOD", "VOCAB"), help=argparse.SUPPRESS)  # child mode
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_logprob_memory.md")
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case[0], int(args.case[1]), args)), flush=True)
        return
    vocabs = [int(v) for v in args.vocab.split(",")]
    methods = args.methods.split(",")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    results: dict[tuple[str, int], dict | str] = {}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    common = ["--rows", str(args.rows), "--completion", str(args.completion), "--prompt", str(args.prompt),
              "--hidden", str(args.hidden), "--layers", str(args.layers)]
    for vocab in vocabs:
        for method in methods:
            if method in ("naive", "trl-selective") and estimate_naive_mib(vocab, args) > psutil.virtual_memory().available / 2**20 / 2:
                results[(method, vocab)] = f"skipped (~{estimate_naive_mib(vocab, args) / 1024:.1f} GiB)"
                print(f"{method:14s} V={vocab}: {results[(method, vocab)]}", flush=True)
                continue
            proc = subprocess.run([sys.executable, __file__, "--case", method, str(vocab), *common], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                results[(method, vocab)] = f"failed (exit {proc.returncode})"
                print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
            else:
                results[(method, vocab)] = json.loads(line[len("RESULT "):])
            r = results[(method, vocab)]
            print(f"{method:14s} V={vocab}: " + (f"{r['extra_mib']:.0f} MiB, {r['seconds']:.2f} s, sum {r['logprob_sum']:.1f}" if isinstance(r, dict) else r), flush=True)
    lines = [
        "# Completion log-prob memory as the vocabulary grows",
        "",
        f"- Date: {started} (UTC); machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, CPU only; 1-minute load average at the end {os.getloadavg()[0]:.2f} "
        "(memory figures do not depend on load)",
        "- Command: `" + " ".join(["python benchmarks/logprob_memory.py", *sys.argv[1:]]) + "`",
        f"- Model: random-init Qwen2, {args.layers} layers, hidden {args.hidden}, tied embeddings, float32; N = {args.rows} rows "
        f"x L = {args.completion} completion tokens (N*L = {args.rows * args.completion}) after a {args.prompt}-token prompt; "
        "forward + backward of the summed log-probs.",
        "- Extra memory = peak RSS during forward + backward minus RSS just before, each case in a fresh process (seconds "
        "in brackets: the forward + backward, on a shared 2-core machine, indicative only). Skipped cases would need more "
        "than half the free RAM (estimate: 3 [N*L, V] float32 tensors, which the measured naive cases match).",
        "",
        "| method | " + " | ".join(f"V = {v:,}" for v in vocabs) + " |",
        "|---|" + "---|" * len(vocabs),
    ]
    for method in methods:
        cells = []
        for vocab in vocabs:
            r = results[(method, vocab)]
            cells.append(f"{r['extra_mib']:.0f} MiB ({r['seconds']:.1f} s)" if isinstance(r, dict) else r)
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    one = {v: args.rows * args.completion * v * 4 / 2**20 for v in vocabs}
    lines += ["| (one [N*L, V] float32 logits tensor, for reference) | " + " | ".join(f"{one[v]:.0f} MiB" for v in vocabs) + " |", ""]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print("\n" + text + f"written to {args.out}")


if __name__ == "__main__":
    main()
