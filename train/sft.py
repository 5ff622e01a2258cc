"""Supervised fine-tuning (SFT) on prompt/completion pairs: the cold start before GRPO (DeepSeek-R1, arXiv:2501.12948
§2.3.1), or distillation of a bigger model's reasoning traces into a smaller one (§2.4).

The data half (tokenised examples with completion-only labels, packing, collation, the block-causal mask, the step
order) is data/sft_examples.py. Here, each a plain function of plain values (only the builders read the config):

* `sft_loss`: summed negative log-likelihood of the completion tokens divided by an explicit `num_tokens`, the
  completion tokens of the whole optimiser step on all ranks, so micro-batches and ranks add up to the big-batch token
  mean (`tests/test_sft.py` checks micro-batched == one batch). The backward and the DeepSpeed step are
  Engine.optimizer_step's (train/engine.py), the same as GRPO's; the LM head is train/logprobs.py's chunked one.
* `sft_stage`: builds its own engine (`Engine.build` from an `EngineSpec`, with its own AdamW and schedule: every ZeRO
  stage and launcher works as in GRPO), trains, and returns a fresh copy of the module with the trained full
  (unsharded) weights on every rank (`Engine.full_state_dict`), free of DeepSpeed hooks, ready for the GRPO engine.
* checkpoints (`SFTCheckpoints`): train/checkpoint.py's atomic keep-last-K layout under <run_dir>/sft_checkpoints,
  with the step, RNG and history, so a stage stopped by SIGKILL or pre-emption continues exactly where it stopped.

Batches are counted in rows: `batch_size` rows per optimiser step over all ranks (an example each without packing, a
packed row of up to `max_length` tokens with it), `micro_batch_size` rows per forward on each rank.
"""
from __future__ import annotations

import copy
import gc
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from data.sft_examples import IGNORE_INDEX, SFTBatch, block_causal_mask, build_examples, collate_rows, pack_examples, step_rows
from train.checkpoint import CheckpointError, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from train.distributed import all_reduce_sum
from train.engine import Engine, EngineSpec
from train.logprobs import lm_head_logprobs
from train.preemption import Preempted

# ---------------------------------------------------------------------------------------------------------------------
# Loss


def sft_loss(token_logprobs: torch.Tensor, *, num_tokens: float) -> torch.Tensor:
    """Negative log-likelihood of the K trained tokens of a micro-batch, divided by the step's token count.

    token_logprobs: [K] log p(label token) of this micro-batch's completion tokens. num_tokens: completion tokens of
    the whole optimiser step summed over micro-batches and ranks, so summing this loss over them gives the token mean
    of the big batch.

    >>> sft_loss(torch.log(torch.tensor([0.5, 0.25])), num_tokens=4.0).item()  # (ln 2 + ln 4) / 4
    0.5198603868484497
    """
    return -token_logprobs.sum() / num_tokens


def label_logprobs(hf_model, batch: SFTBatch, *, chunk_size: int, sharded: bool = False) -> torch.Tensor:
    """[K] log-probs of the trained tokens of `batch` (K = number of labels != IGNORE_INDEX after the shift) under the
    transformers model `hf_model` (Engine.hf_module; `sharded` = Engine.sharded).

    As for GRPO: the decoder runs once, then train/logprobs.py's chunked LM head runs only on the hidden states that
    predict a trained token, so no [R, T, V] logits tensor exists.
    """
    decoder = hf_model.get_decoder()
    if hf_model.config._attn_implementation.startswith("flash"):
        attention_mask = None  # flash-attention splits sequences at position-id resets
    else:
        attention_mask = block_causal_mask(batch.segment_ids, hf_model.get_output_embeddings().weight.dtype)
    hidden = decoder(
        input_ids=batch.input_ids, attention_mask=attention_mask, position_ids=batch.position_ids, use_cache=False,
    ).last_hidden_state  # [R, T, H]
    targets = batch.labels[:, 1:]  # the hidden state at t predicts token t+1
    keep = targets != IGNORE_INDEX
    logprobs, _ = lm_head_logprobs(hf_model, hidden[:, :-1][keep], targets[keep], temperature=1.0, chunk_size=chunk_size,
                                   with_entropy=False, sharded=sharded)
    return logprobs


# ---------------------------------------------------------------------------------------------------------------------
# Training


def sft_update(engine: Engine, batch: SFTBatch, *, micro_batch_size: int, chunk_size: int) -> dict[str, float]:
    """One optimiser step over this rank's rows of the step. Returns metrics over all ranks: `loss` is the token mean
    NLL of the whole step, `num_tokens` its trained tokens, `grad_norm` before clipping, `skipped` 1.0 when the
    optimiser refused non-finite gradients."""
    counts = all_reduce_sum(torch.tensor([batch.completion_mask[:, 1:].sum().item()], dtype=torch.float64))
    num_tokens = max(counts.item(), 1.0)

    def micro_loss(micro: SFTBatch) -> torch.Tensor:
        micro = SFTBatch(*(t.to(engine.device) for t in vars(micro).values()))
        logprobs = label_logprobs(engine.hf_module, micro, chunk_size=chunk_size, sharded=engine.sharded)
        return sft_loss(logprobs, num_tokens=num_tokens)

    micro_batches = (batch.rows(start, start + micro_batch_size) for start in range(0, batch.input_ids.shape[0], micro_batch_size))
    step = engine.optimizer_step(micro_batches, micro_loss)
    return {"loss": step.loss, "num_tokens": num_tokens, "grad_norm": step.grad_norm, "skipped": float(step.skipped),
            "lr": step.lr}


@dataclass
class SFTCheckpoints:
    """Where and when the SFT stage saves (train/checkpoint.py's atomic keep-last-K layout, stage "sft")."""

    root: Path  # <run_dir>/sft_checkpoints
    every: int  # save every this many SFT steps; 0: only at the end of the stage and on a pre-emption signal
    keep_last: int
    resume_from: Path | None = None  # an SFT checkpoint to continue from


@dataclass
class SFTResult:
    history: list[dict[str, float]]  # one dict per optimiser step: loss, num_tokens, grad_norm, skipped, lr, tokens_per_second
    metrics: dict[str, float]  # summary: sft/... (examples, dropped, rows, steps, final loss, tokens/s, time)


def sft_stage(
    model,
    tokenizer,
    rows: list[dict],
    *,
    template: str,
    system_prompt: str | None,
    prefill_think: bool,
    max_length: int,
    packing: bool,
    max_steps: int | None,
    epochs: float,
    batch_size: int,
    engine_spec: EngineSpec,
    seed: int,
    rank: int,
    chunk_size: int = 1024,
    show_progress: bool = True,
    checkpoints: SFTCheckpoints | None = None,
    tool_protocol=None,
    stop_signal: Callable[[], int | None] | None = None,
):
    """SFT `model` on `rows` ({prompt, completion}) through its own engine, built from `engine_spec` (its
    micro_batch_size, world size, optimiser and schedule; the step count and accumulation are set here from the rows
    and batch_size); returns (module, SFTResult).

    The returned module is a copy of `model` taken before DeepSpeed touched it, loaded with the trained full weights
    on every rank (gathered under ZeRO-3), on CPU like a freshly loaded model, with no DeepSpeed hooks: hand it to
    `Engine.build` for GRPO. `model` itself belongs to the discarded SFT engine afterwards.

    Steps: `max_steps` if given, else ceil(epochs * rows / batch_size) (rows = packed rows with `packing`). Every rank
    takes rows [rank*n, (rank+1)*n) of each step's batch_size rows (n = batch_size / world_size).

    With `checkpoints`, the stage saves every `checkpoints.every` steps and at its end, and continues exactly from
    `checkpoints.resume_from`: a step's rows are a function of (seed, step) and the checkpoint holds the engine
    (weights, optimiser, schedule), the RNG states and the history so far, so a resumed stage logs and trains what an
    uninterrupted one does. `stop_signal` (collective, called after every step) returns a signal number when the run
    is pre-empted: the stage saves and raises Preempted.
    """
    world_size, micro_batch_size = engine_spec.world_size, engine_spec.micro_batch_size
    if batch_size % (world_size * micro_batch_size):
        raise ValueError(f"sft batch_size={batch_size} must be divisible by world size {world_size} x "
                         f"micro_batch_size={micro_batch_size}")
    examples, dropped = build_examples(rows, tokenizer, template=template, system_prompt=system_prompt,
                                       prefill_think=prefill_think, max_length=max_length, tool_protocol=tool_protocol)
    if not examples:
        raise ValueError(f"no SFT example fits max_length={max_length} ({dropped} dropped)")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [examples[i] for i in order]  # pack a shuffled stream, so rows mix kinds and lengths
    packed = pack_examples(shuffled, max_length) if packing else [[ex] for ex in shuffled]
    steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * len(packed) / batch_size))
    per_rank = batch_size // world_size

    pristine = copy.deepcopy(model)  # hook-free copy; receives the trained weights at the end
    engine = Engine.build(model, replace(engine_spec, total_steps=steps, grad_accum_steps=per_rank // micro_batch_size))
    history: list[dict[str, float]] = []
    start_step, elapsed_before = 0, 0.0
    if checkpoints is not None and checkpoints.resume_from is not None:
        state = load_checkpoint(engine, checkpoints.resume_from, rank=rank, world_size=world_size)
        if state.get("total_steps") != steps:
            raise CheckpointError(
                f"checkpoint.resume: {checkpoints.resume_from}: saved by an SFT stage of {state.get('total_steps')} steps, "
                f"the sft section now gives {steps}; exact resume needs the same sft section"
            )
        start_step, history, elapsed_before = state["step"], state["history"], state["elapsed"]
        restore_rng(state["rng"])
    t_start = time.perf_counter()

    def save(engine, done: int) -> Path:
        state = {"stage": "sft", "step": done, "total_steps": steps, "history": history, "rng": capture_rng(),
                 "elapsed": elapsed_before + time.perf_counter() - t_start}
        return save_checkpoint(engine, checkpoints.root, done, state, rank=rank, world_size=world_size,
                               keep_last=checkpoints.keep_last, stage="sft")

    progress = tqdm(range(start_step, steps), desc="SFT", initial=start_step, total=steps,
                    disable=not (show_progress and rank == 0), dynamic_ncols=True)
    for step in progress:
        t_step = time.perf_counter()
        indices = step_rows(len(packed), step, batch_size, seed)[rank * per_rank : (rank + 1) * per_rank]
        batch = collate_rows([packed[i] for i in indices], tokenizer.pad_token_id)
        metrics = sft_update(engine, batch, micro_batch_size=micro_batch_size, chunk_size=chunk_size)
        metrics["tokens_per_second"] = metrics["num_tokens"] / (time.perf_counter() - t_step)
        history.append(metrics)
        progress.set_postfix(loss=f"{metrics['loss']:.4f}")
        done = step + 1
        signal_number = stop_signal() if stop_signal is not None else None
        if checkpoints is not None and (signal_number or done == steps or (checkpoints.every and done % checkpoints.every == 0)):
            saved = save(engine, done)
        if signal_number:
            where = f"SFT checkpoint saved at SFT step {done} of {steps} in {saved.parent}" if checkpoints else "no checkpoint (SFT not checkpointed)"
            raise Preempted(signal_number, where)
    elapsed = elapsed_before + time.perf_counter() - t_start

    pristine.load_state_dict(engine.full_state_dict())
    engine.destroy()  # removes ZeRO's parameter hooks; `model` is not used again
    del engine
    gc.collect()
    trained_tokens = sum(m["num_tokens"] for m in history)
    summary = {
        "sft/examples": float(len(examples)), "sft/dropped": float(dropped), "sft/rows": float(len(packed)),
        "sft/steps": float(steps), "sft/epochs": steps * batch_size / len(packed),
        "sft/loss_first": history[0]["loss"], "sft/loss_last": history[-1]["loss"],
        "sft/skipped_steps": sum(m["skipped"] for m in history), "sft/time": elapsed,
        "sft/tokens_per_second": trained_tokens / elapsed,
    }
    return pristine, SFTResult(history=history, metrics=summary)
