"""Throughput on a GPU: thinkrl's sampler and its DeepSpeed GRPO update on a random model of Qwen2.5-0.5B's shape
(24 layers, width 896, 14 heads / 2 KV heads, MLP 4864, vocabulary 151,936, tied embeddings), in bf16.

    python benchmarks/gpu_throughput.py --out benchmarks/results_gpu.md            # on the GPU (benchmarks/gpu_check.sh)
    python benchmarks/gpu_throughput.py --shape tiny --device cpu --out /tmp/g.md  # the CPU dry run CI makes

Reports, each measured in this run:
- matmul peak: the best of several bf16 `torch.mm` of 8192² matrices on the GPU (2048² float32 on the CPU), 2·n³ FLOP;
- generation: thinkrl's sampler (train/rollout.py::_sample_with_cache), `rows` completions of exactly `new_tokens`
  tokens from one prompt (EOS never ends a row), tokens/s and 2·params·tokens/s as a fraction of the peak;
- update: train/update.py::policy_update on a DeepSpeed ZeRO-`zero_stage` engine (bf16, fp32 master weights), `rows`
  completions of `new_tokens` tokens after a `prompt_tokens`-token prompt, in micro-batches of `micro_batch_size`;
  tokens/s and MFU = 6·params·tokens/s over the measured peak (and over the H200's 989 TFLOP/s dense bf16 spec);
- peak GPU memory of each phase.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    "qwen0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                     intermediate_size=4864, vocab_size=151_936),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                 vocab_size=1024),
}
H200_BF16_DENSE = 989e12


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocations, kernels' first launch, autotuning
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(device: torch.device) -> float:
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b), device, 5)


def random_model(shape: str, dtype: torch.dtype, device: torch.device):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=True, use_cache=False,
                         attn_implementation="sdpa", bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype)


def parameter_count(model) -> int:
    """Parameters, the tied embedding / LM head counted once (`parameters()` yields a shared tensor once): the FLOP
    count of a token's forward is ~2x this, taking the lookup for free and the head's matmul as the embedding's cost."""
    return sum(p.numel() for p in model.parameters())


def peak_memory_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


@torch.no_grad()
def generation(model, device: torch.device, *, rows: int, new_tokens: int, repeats: int) -> dict[str, float]:
    from train.rollout import _sample_with_cache

    model.config.use_cache = True
    prompt = torch.randint(3, model.config.vocab_size, (1, 32), device=device)
    mask = torch.ones_like(prompt)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = best_seconds(lambda: _sample_with_cache(
        model, prompt, mask, num_generations=rows, max_new_tokens=new_tokens, eos_token_id=-1, pad_token_id=2,
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0), device, repeats)
    model.config.use_cache = False
    return {"seconds": seconds, "tokens_per_second": rows * new_tokens / seconds, "peak_gib": peak_memory_gib(device)}


def update(model, device: torch.device, *, rows: int, prompt_tokens: int, new_tokens: int, micro_batch_size: int,
           zero_stage: int, dtype: str, repeats: int) -> dict[str, float]:
    from train.batch import TrainBatch
    from train.distributed import init_distributed
    from train.engine import Engine, EngineSpec
    from train.loss import GRPOLoss
    from train.micro_batches import MicroBatching
    from train.update import policy_update

    init_distributed()
    spec = EngineSpec(zero_stage=zero_stage, micro_batch_size=micro_batch_size, grad_accum_steps=rows // micro_batch_size,
                      world_size=1, max_grad_norm=1.0, dtype=dtype, lr=1e-6, betas=(0.9, 0.99), total_steps=100)
    engine = Engine.build(model, spec)
    loss = GRPOLoss(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, max_completion_length=new_tokens,
                    importance_sampling_level="token", use_bias_correction_kl=False)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, model.config.vocab_size, (rows, prompt_tokens + new_tokens), generator=generator)
    batch = TrainBatch(
        input_ids=input_ids.to(device), attention_mask=torch.ones_like(input_ids, device=device),
        completion_mask=torch.ones(rows, new_tokens, device=device), advantages=torch.randn(rows, generator=generator).to(device),
        old_logprobs=None, ref_logprobs=None,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = best_seconds(lambda: policy_update(
        engine, batch, loss=loss, micro_batching=MicroBatching(micro_batch_size), temperature=1.0, logprob_chunk_size=1024),
        device, repeats)
    tokens = rows * (prompt_tokens + new_tokens)
    return {"seconds": seconds, "tokens_per_second": tokens / seconds, "peak_gib": peak_memory_gib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen0.5b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=64, help="completions (B x G) per generation and per update")
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_gpu.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_throughput: no CUDA device (use --device cpu --shape tiny for the dry run)")
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    dtype_name = "bfloat16" if device.type == "cuda" else "float32"
    dtype = getattr(torch, dtype_name)

    peak = matmul_peak(device)
    model = random_model(args.shape, dtype, device)
    n_params = parameter_count(model)
    gen = generation(model, device, rows=args.rows, new_tokens=args.new_tokens, repeats=args.repeats)
    upd = update(model.float() if dtype_name == "float32" else model, device, rows=args.rows, prompt_tokens=args.prompt_tokens,
                 new_tokens=args.new_tokens, micro_batch_size=args.micro_batch_size, zero_stage=args.zero_stage,
                 dtype=dtype_name, repeats=args.repeats)
    gen_flops, upd_flops = 2 * n_params * gen["tokens_per_second"], 6 * n_params * upd["tokens_per_second"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    spec = f" | {upd_flops / H200_BF16_DENSE:.1%} of the H200's 989 TFLOP/s" if device.type == "cuda" else ""
    lines = [
        f"# thinkrl throughput on {name}",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} (UTC); torch {torch.__version__}; "
        f"Python {platform.python_version()}",
        f"- Command: `python benchmarks/gpu_throughput.py --shape {args.shape} --device {args.device} --rows {args.rows} "
        f"--new-tokens {args.new_tokens} --prompt-tokens {args.prompt_tokens} --micro-batch-size {args.micro_batch_size} "
        f"--zero-stage {args.zero_stage}`",
        f"- Model: random Qwen2, shape `{args.shape}` {SHAPES[args.shape]}, {n_params / 1e6:.1f} M parameters, {dtype_name}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| matmul peak (measured) | {peak / 1e12:.1f} TFLOP/s |",
        f"| generation, {args.rows} rows x {args.new_tokens} tokens | {gen['tokens_per_second']:,.0f} tokens/s "
        f"({gen['seconds']:.2f} s; {gen_flops / peak:.1%} of the peak) |",
        f"| generation peak memory | {gen['peak_gib']:.1f} GiB |",
        f"| update (ZeRO-{args.zero_stage}), {args.rows} x {args.prompt_tokens + args.new_tokens} tokens | "
        f"{upd['tokens_per_second']:,.0f} tokens/s ({upd['seconds']:.2f} s) |",
        f"| update MFU (6·params·tokens/s) | {upd_flops / peak:.1%} of the measured peak{spec} |",
        f"| update peak memory | {upd['peak_gib']:.1f} GiB |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
