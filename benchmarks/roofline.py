"""This machine's limits next to thinkrl's decode and update rates on a model (benchmarks/grpo_vs_trl.py --task smollm2).

    python benchmarks/roofline.py MODEL_DIR [--rows 16,64] [--new-tokens 64]

- matmul peak: the best of several float32 `torch.mm` of 2048 x 2048 matrices, 2·n³ FLOP each;
- decode: thinkrl's sampler (train/rollout.py::_sample_with_cache) and HF `generate`, `rows` completions of exactly
  `new_tokens` tokens (EOS never ends a row, so every row decodes to the end) from one short prompt; FLOP/s counted
  as 2·params·generated tokens per second (each token's forward is one multiply-add per parameter; the tied LM head
  is counted once, embedding lookups cost none); the time of one decode step and of its matmuls alone (the same
  Linear shapes timed on their own);
- update: a forward + backward of `rows` x `seq` tokens through the model, counted as 6·params·tokens.
Each figure is also given as a fraction of the matmul peak. Threads: torch's default (the cores).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, lazy initialisation, thread pool
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best float32 n x n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b), repeats)


def _prompt(tokenizer, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tokenizer("What is 37 + 48? Think step by step.", add_special_tokens=False, return_tensors="pt")["input_ids"]
    return ids.repeat(rows, 1), torch.ones(rows, ids.shape[1], dtype=torch.long)


@torch.no_grad()
def decode_seconds(model, tokenizer, *, rows: int, new_tokens: int, repeats: int) -> dict[str, float]:
    """Seconds for `rows` x `new_tokens` generated tokens: thinkrl's sampler (one prompt row, G = rows) and HF generate."""
    from train.rollout import _sample_with_cache

    prompt_ids, prompt_mask = _prompt(tokenizer, 1)
    never = -1  # no token id: rows never finish, every one decodes new_tokens tokens

    def thinkrl():
        _sample_with_cache(model, prompt_ids, prompt_mask, num_generations=rows, max_new_tokens=new_tokens, eos_token_id=never,
                           pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)

    rows_ids, rows_mask = _prompt(tokenizer, rows)

    def hf():
        model.generate(input_ids=rows_ids, attention_mask=rows_mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=None,
                       max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)

    return {"thinkrl": best_seconds(thinkrl, repeats), "hf_generate": best_seconds(hf, repeats)}


@torch.no_grad()
def decode_matmul_seconds(model, rows: int, repeats: int) -> float:
    """Seconds of the Linear layers of one decode step alone (every nn.Linear of the model at `rows` x 1 tokens, plus
    the tied LM head): the part of a decode step that is matmul."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(rows, m.in_features) for m in linears]

    def run():
        for m, x in zip(linears, inputs):
            torch.nn.functional.linear(x, m.weight, m.bias)

    return best_seconds(run, repeats)


def update_seconds(model, *, rows: int, seq: int, repeats: int) -> float:
    """Seconds of one forward + backward (sum of the logits' log-softmax at the targets) over rows x seq tokens."""
    ids = torch.randint(0, model.config.vocab_size, (rows, seq), generator=torch.Generator().manual_seed(0))
    model.train()

    def step():
        logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    seconds = best_seconds(step, repeats)
    model.eval()
    return seconds


def measure(model_dir: str, *, rows: list[int], new_tokens: int, update_rows: int, update_seq: int, repeats: int = 2) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    params = sum(p.numel() for p in model.parameters())
    peak = matmul_peak()
    result = {"params": params, "matmul_peak_flops": peak, "decode": {}, "threads": torch.get_num_threads(), "new_tokens": new_tokens}
    for n in rows:
        seconds = decode_seconds(model, tokenizer, rows=n, new_tokens=new_tokens, repeats=repeats)
        matmul = decode_matmul_seconds(model, n, repeats=5)
        tokens = n * new_tokens
        result["decode"][n] = {
            name: {"seconds": s, "tokens_per_s": tokens / s, "flops": 2 * params * tokens / s,
                   "fraction_of_peak": 2 * params * tokens / s / peak, "step_ms": 1000 * s / new_tokens}
            for name, s in seconds.items()
        }
        result["decode"][n]["matmul_step_ms"] = 1000 * matmul
    seconds = update_seconds(model, rows=update_rows, seq=update_seq, repeats=repeats)
    flops = 6 * params * update_rows * update_seq / seconds
    result["update"] = {"rows": update_rows, "seq": update_seq, "seconds": seconds, "flops": flops, "fraction_of_peak": flops / peak}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--rows", default="16,64")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--update-rows", type=int, default=16)
    parser.add_argument("--update-seq", type=int, default=104)
    args = parser.parse_args()
    result = measure(args.model_dir, rows=[int(r) for r in args.rows.split(",")], new_tokens=args.new_tokens,
                     update_rows=args.update_rows, update_seq=args.update_seq)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
