"""Supervised fine-tuning (SFT) on prompt/completion pairs: the cold start before GRPO (DeepSeek-R1, arXiv:2501.12948
§2.3.1), or distillation of a bigger model's reasoning traces into a smaller one (§2.4).

Pieces, each a plain function of plain values (only `train/main.py` reads the config):

* `tokenize_example`: the prompt rendered with `data.templates.render_prompt` (the same template GRPO samples from),
  the completion tokenised on its own and appended, then EOS. Prompt and completion are tokenised separately, as the
  rollout does (prompt ids, then sampled ids), so SFT trains exactly the token boundary that GRPO later samples at.
  **Completion-only loss**: labels are -100 on prompt tokens (TRL `completion_only_loss`).
* `pack_examples` / `collate_rows`: **packing** (greedy, in order) of examples into rows of at most `max_length`
  tokens. Every example keeps its own positions (`position_ids` restart at 0) and sees only itself: rows carry a
  4-D block-diagonal causal mask [R, 1, T, T] for `eager` / `sdpa`, which transformers passes through unchanged;
  `flash_attention_2` gets no mask and splits sequences at the position-id resets instead (HF's
  `DataCollatorWithFlattening` convention). No loss crosses an example: an example's first token is a prompt token
  (label -100), so the last token of the previous example predicts nothing. Without packing a row is one example.
* `sft_loss`: summed negative log-likelihood of the completion tokens divided by an explicit `num_tokens`, the
  completion tokens of the whole optimiser step on all ranks, so micro-batches and ranks add up to the big-batch token
  mean (`tests/test_sft.py` checks micro-batched == one batch). As in train/update.py, the single
  `engine.backward(loss * world_size, scale_wrt_gas=False)` undoes DeepSpeed's mean over ranks and its division by
  the accumulation steps.
* `sft_stage`: builds its own DeepSpeed engine (`train.model.build_engine` + `deepspeed_config`, its own AdamW and
  schedule: every ZeRO stage and launcher works as in GRPO), trains, and returns a fresh copy of the module with the
  trained full (unsharded) weights on every rank, free of DeepSpeed hooks, ready for the GRPO engine.

Batches are counted in rows: `batch_size` rows per optimiser step over all ranks (an example each without packing, a
packed row of up to `max_length` tokens with it), `micro_batch_size` rows per forward on each rank.
"""

from __future__ import annotations

import copy
import gc
import math
import time
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

from data.templates import render_prompt
from data.traces import strip_prefilled_think
from train.distributed import all_reduce_sum
from train.model import build_engine, deepspeed_config

IGNORE_INDEX = -100  # label of a token that is not trained on (prompt, padding): PyTorch / HF cross-entropy convention
PAD_SEGMENT = -1  # segment id of padding; padding attends only to padding (no row is fully masked, so no NaN)


@dataclass
class SFTExample:
    input_ids: list[int]  # [T_i] prompt tokens, completion tokens, EOS
    labels: list[int]  # [T_i] IGNORE_INDEX on prompt tokens, the token itself on completion tokens and EOS


@dataclass
class SFTBatch:
    """R rows of T tokens; a row holds one example (no packing) or several (packing), right-padded."""

    input_ids: torch.Tensor  # [R, T]
    labels: torch.Tensor  # [R, T] IGNORE_INDEX where no loss (prompt, padding)
    position_ids: torch.Tensor  # [R, T] restart at 0 at every example; padding continues from 0 as its own segment
    segment_ids: torch.Tensor  # [R, T] 0, 1, ... = example within the row; PAD_SEGMENT on padding

    @property
    def completion_mask(self) -> torch.Tensor:  # [R, T] 1.0 on the tokens that are trained on
        return (self.labels != IGNORE_INDEX).float()

    def rows(self, start: int, end: int) -> "SFTBatch":
        return SFTBatch(*(t[start:end] for t in (self.input_ids, self.labels, self.position_ids, self.segment_ids)))


# ---------------------------------------------------------------------------------------------------------------------
# Data: tokenise, pack, collate


def tokenize_example(
    prompt, completion: str, tokenizer, *, template: str, system_prompt: str | None, prefill_think: bool
) -> SFTExample:
    """One example: rendered prompt + completion + EOS, labels IGNORE_INDEX on the prompt.

    A completion that starts with `<think>` after a prompt that already ends with `<think>` loses that tag
    (`data.traces.strip_prefilled_think`), so full traces from any source fit a prefilled prompt.
    """
    text = render_prompt(prompt, tokenizer, template=template, system_prompt=system_prompt, prefill_think=prefill_think)
    # Chat templates write BOS themselves; r1_zero/plain want the tokenizer's own special tokens (data/templates.py).
    prompt_ids = tokenizer(text, add_special_tokens=template != "chat")["input_ids"]
    completion_ids = tokenizer(strip_prefilled_think(completion, text), add_special_tokens=False)["input_ids"]
    completion_ids = [*completion_ids, tokenizer.eos_token_id]
    if not prompt_ids:
        raise ValueError(f"empty prompt after rendering {prompt!r}")  # packing relies on a masked first token
    return SFTExample(input_ids=prompt_ids + completion_ids, labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids)


def build_examples(rows: list[dict], tokenizer, *, template: str, system_prompt: str | None, prefill_think: bool,
                   max_length: int) -> tuple[list[SFTExample], int]:
    """Tokenised examples from rows `{prompt, completion}`, and how many were dropped for exceeding `max_length`
    (dropped, not cut: a cut completion would teach the model to stop without EOS or answer)."""
    examples = [
        tokenize_example(row["prompt"], row["completion"], tokenizer, template=template, system_prompt=system_prompt,
                         prefill_think=prefill_think)
        for row in rows
    ]
    kept = [ex for ex in examples if len(ex.input_ids) <= max_length]
    return kept, len(examples) - len(kept)


def pack_examples(examples: list[SFTExample], max_length: int) -> list[list[SFTExample]]:
    """Greedy packing in order: each row takes examples until the next would exceed `max_length` tokens.

    >>> ex = lambda n: SFTExample([0] * n, [0] * n)
    >>> [[len(e.input_ids) for e in row] for row in pack_examples([ex(3), ex(4), ex(2), ex(6)], 8)]
    [[3, 4], [2, 6]]
    """
    rows: list[list[SFTExample]] = []
    used = max_length
    for example in examples:
        n = len(example.input_ids)
        if n > max_length:
            raise ValueError(f"example of {n} tokens exceeds max_length={max_length}")
        if used + n > max_length:
            rows.append([])
            used = 0
        rows[-1].append(example)
        used += n
    return rows


def collate_rows(rows: list[list[SFTExample]], pad_token_id: int) -> SFTBatch:
    """Right-pad the rows to the longest one; position ids restart and segment ids count up at every example."""
    width = max(sum(len(ex.input_ids) for ex in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.full(shape, PAD_SEGMENT, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for segment, example in enumerate(row):
            n = len(example.input_ids)
            input_ids[r, start : start + n] = torch.tensor(example.input_ids)
            labels[r, start : start + n] = torch.tensor(example.labels)
            position_ids[r, start : start + n] = torch.arange(n)
            segment_ids[r, start : start + n] = segment
            start += n
        position_ids[r, start:] = torch.arange(width - start)
    return SFTBatch(input_ids, labels, position_ids, segment_ids)


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[R, T] segment ids -> [R, 1, T, T] additive mask: 0 where query q may see key k (same segment, k <= q), the
    dtype's minimum elsewhere. Additive float works for both `eager` (added to the scores) and `sdpa` (attn_mask).

    >>> block_causal_mask(torch.tensor([[0, 0, 1]]), torch.float32)[0, 0].eq(0).int().tolist()
    [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    width = segment_ids.shape[1]
    same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)  # [R, T(q), T(k)]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (same & causal).unsqueeze(1)
    return torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device).masked_fill(~allowed, torch.finfo(dtype).min)


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


def _head_logprobs(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """hidden [C, H], targets [C] -> log p(target) [C] in float32."""
    logits = lm_head(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def label_logprobs(model, batch: SFTBatch, *, chunk_size: int) -> torch.Tensor:
    """[K] log-probs of the trained tokens of `batch` (K = number of labels != IGNORE_INDEX after the shift).

    As train/logprobs.py: the decoder runs once, then the LM head runs only on the hidden states that predict a
    trained token, `chunk_size` at a time under activation checkpointing, so no [R, T, V] logits tensor exists.
    """
    hf_model = getattr(model, "module", model)
    decoder, lm_head = hf_model.get_decoder(), hf_model.get_output_embeddings()
    if hf_model.config._attn_implementation.startswith("flash"):
        attention_mask = None  # flash-attention splits sequences at position-id resets
    else:
        attention_mask = block_causal_mask(batch.segment_ids, lm_head.weight.dtype)
    hidden = decoder(
        input_ids=batch.input_ids, attention_mask=attention_mask, position_ids=batch.position_ids, use_cache=False,
    ).last_hidden_state  # [R, T, H]
    targets = batch.labels[:, 1:]  # the hidden state at t predicts token t+1
    keep = targets != IGNORE_INDEX
    hidden, targets = hidden[:, :-1][keep], targets[keep]  # [K, H], [K]
    step = chunk_size if chunk_size > 0 else max(1, targets.numel())
    parts = []
    for start in range(0, targets.numel(), step):
        args = (lm_head, hidden[start : start + step], targets[start : start + step])
        use_checkpoint = torch.is_grad_enabled() and targets.numel() > step
        parts.append(checkpoint(_head_logprobs, *args, use_reentrant=False) if use_checkpoint else _head_logprobs(*args))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Training


def sft_update(engine, batch: SFTBatch, *, micro_batch_size: int, world_size: int, chunk_size: int) -> dict[str, float]:
    """One optimiser step over this rank's rows of the step. Returns metrics over all ranks: `loss` is the token mean
    NLL of the whole step, `num_tokens` its trained tokens, `grad_norm` before clipping, `skipped` 1.0 when the
    optimiser refused non-finite gradients."""
    counts = all_reduce_sum(torch.tensor([batch.completion_mask[:, 1:].sum().item()], dtype=torch.float64))
    num_tokens = max(counts.item(), 1.0)
    guard = getattr(engine, "client_optimizer", None)  # train.optim.GuardedAdamW
    if guard is not None:
        guard.last_step_skipped = False
    engine.train()
    total, grad_norm = 0.0, None
    device = next(engine.module.parameters()).device
    for start in range(0, batch.input_ids.shape[0], micro_batch_size):
        micro = SFTBatch(*(t.to(device) for t in vars(batch.rows(start, start + micro_batch_size)).values()))
        loss = sft_loss(label_logprobs(engine, micro, chunk_size=chunk_size), num_tokens=num_tokens)
        # The single backward call site: the loss is already normalised by the step's global token count, so no
        # division by the accumulation steps; x world_size undoes DeepSpeed's mean over data-parallel ranks.
        engine.backward(loss * world_size, scale_wrt_gas=False)
        if engine.is_gradient_accumulation_boundary() and engine.zero_optimization_stage() == 0:
            grad_norm = _grad_norm(engine.module)  # DeepSpeed keeps no norm without ZeRO: measure before the step
        engine.step()
        total += loss.item()
    if engine.zero_optimization_stage() != 0:
        grad_norm = engine.get_global_grad_norm()
    grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
    skipped = bool(getattr(guard, "last_step_skipped", False)) or not math.isfinite(grad_norm)
    return {"loss": all_reduce_sum(torch.tensor([total], dtype=torch.float64)).item(), "num_tokens": num_tokens,
            "grad_norm": grad_norm, "skipped": float(skipped), "lr": engine.get_lr()[0]}


@torch.no_grad()
def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item() if grads else 0.0


def step_rows(num_rows: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Row indices of optimiser step `step` (0-based), the same on every rank: a stream of seeded per-epoch
    permutations, cut into consecutive batches (a batch may straddle two epochs; no row is dropped)."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, num_rows)
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        indices.append(int(torch.randperm(num_rows, generator=generator)[offset]))
    return indices


def full_state_dict(engine, zero_stage: int) -> dict[str, torch.Tensor]:
    """Every weight in full, on CPU, on every rank (collective under ZeRO-3: call on all ranks)."""
    module = engine.module
    if zero_stage != 3:
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


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
    micro_batch_size: int,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    warmup_steps: int,
    lr_scheduler: str,
    max_grad_norm: float,
    seed: int,
    zero_stage: int,
    dtype: str,
    world_size: int,
    rank: int,
    offload_optimizer: bool = False,
    offload_param: bool = False,
    ds_overrides: dict | None = None,
    chunk_size: int = 1024,
    show_progress: bool = True,
):
    """SFT `model` on `rows` ({prompt, completion}) through its own DeepSpeed engine; returns (module, SFTResult).

    The returned module is a copy of `model` taken before DeepSpeed touched it, loaded with the trained full weights
    on every rank (gathered under ZeRO-3), on CPU like a freshly loaded model, with no DeepSpeed hooks: hand it to
    `build_engine` for GRPO. `model` itself belongs to the discarded SFT engine afterwards.

    Steps: `max_steps` if given, else ceil(epochs * rows / batch_size) (rows = packed rows with `packing`). Every rank
    takes rows [rank*n, (rank+1)*n) of each step's batch_size rows (n = batch_size / world_size).
    """
    if batch_size % (world_size * micro_batch_size):
        raise ValueError(f"sft batch_size={batch_size} must be divisible by world size {world_size} x "
                         f"micro_batch_size={micro_batch_size}")
    examples, dropped = build_examples(rows, tokenizer, template=template, system_prompt=system_prompt,
                                       prefill_think=prefill_think, max_length=max_length)
    if not examples:
        raise ValueError(f"no SFT example fits max_length={max_length} ({dropped} dropped)")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [examples[i] for i in order]  # pack a shuffled stream, so rows mix kinds and lengths
    packed = pack_examples(shuffled, max_length) if packing else [[ex] for ex in shuffled]
    steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * len(packed) / batch_size))
    per_rank = batch_size // world_size

    pristine = copy.deepcopy(model)  # hook-free copy; receives the trained weights at the end
    ds_config = deepspeed_config(
        zero_stage=zero_stage, micro_batch_size=micro_batch_size, grad_accum_steps=per_rank // micro_batch_size,
        world_size=world_size, max_grad_norm=max_grad_norm, dtype=dtype, offload_optimizer=offload_optimizer,
        offload_param=offload_param, overrides=ds_overrides,
    )
    engine = build_engine(model, ds_config, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                          warmup_steps=warmup_steps, total_steps=steps, schedule=lr_scheduler)
    history: list[dict[str, float]] = []
    t_start = time.perf_counter()
    progress = tqdm(range(steps), desc="SFT", disable=not (show_progress and rank == 0), dynamic_ncols=True)
    for step in progress:
        t_step = time.perf_counter()
        indices = step_rows(len(packed), step, batch_size, seed)[rank * per_rank : (rank + 1) * per_rank]
        batch = collate_rows([packed[i] for i in indices], tokenizer.pad_token_id)
        metrics = sft_update(engine, batch, micro_batch_size=micro_batch_size, world_size=world_size, chunk_size=chunk_size)
        metrics["tokens_per_second"] = metrics["num_tokens"] / (time.perf_counter() - t_step)
        history.append(metrics)
        progress.set_postfix(loss=f"{metrics['loss']:.4f}")
    elapsed = time.perf_counter() - t_start

    pristine.load_state_dict(full_state_dict(engine, zero_stage))
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
