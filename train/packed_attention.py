"""Attention over a packed sequence of prompts and completions, segment by segment (train/logprobs.py::_packed_hidden).

A packed sequence holds each distinct prompt once, followed by its group's completions. A completion token attends to
its group's prompt and to its own earlier tokens, nothing else. With a dense [T, T] block mask, SDPA computes all T^2
query-key pairs (it does not skip masked blocks), although a completion needs only (prompt + own length) keys: with 16
completions of ~36 tokens after 2 prompts of ~70 tokens, 513k pairs computed for ~60k used, and attention was a fifth
of the LoRA update on SmolLM2-135M (benchmarks/results_step_profile.md).

Here the queries and keys of each segment are gathered into small padded batches instead: the prompts ([U, P] queries
over their own keys, causal) and the completions ([M, C] queries over their prompt's keys and their own, causal in
the completion), one SDPA call each, and the outputs gathered back into packed order. Index gathers are
differentiable, so gradients flow to the packed queries, keys and values as with the dense mask.

Used through transformers' attention interface (`AttentionInterface`): while a packed forward runs, the model's config
names SEGMENT_ATTENTION and the plan travels in the forward's keyword arguments (transformers passes them down to every
attention call). Not under activation checkpointing: the recomputation in the backward runs after the config is
restored, so it would take the model's own attention without the plan (the dense mask is used there instead).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SEGMENT_ATTENTION = "thinkrl_segments"  # the name registered with transformers' AttentionInterface
PLAN_KWARG = "thinkrl_segment_plan"  # the forward keyword that carries the SegmentPlan to every attention call


@dataclass(frozen=True)
class SegmentBatch:
    """Segments of one kind, padded to one shape: query_index [S, Q] and key_index [S, K] (positions in the packed
    sequence; padding slots point at a real position and are masked out), mask [S, 1, Q, K] (True: attend)."""

    query_index: torch.Tensor
    key_index: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class SegmentPlan:
    """The prompt and completion segment batches of one packed sequence, and `slot` [T]: where each packed position's
    output is in the concatenated [prompt slots, completion slots] outputs."""

    prompts: SegmentBatch
    completions: SegmentBatch | None
    slot: torch.Tensor


def segment_plan(prompts: list[tuple[int, int]], completions: list[tuple[int, int, int]], num_tokens: int, device) -> SegmentPlan:
    """prompts: (start, length) of each prompt in the packed sequence; completions: (start, length, prompt number) of
    each completion's tokens (those that run through the decoder); together they cover the `num_tokens` positions."""
    prompt_width = max(length for _, length in prompts)
    columns = torch.arange(prompt_width)
    prompt_starts = torch.tensor([start for start, _ in prompts])
    prompt_lengths = torch.tensor([length for _, length in prompts])
    prompt_valid = columns[None, :] < prompt_lengths[:, None]  # [U, P]
    prompt_index = torch.where(prompt_valid, prompt_starts[:, None] + columns[None, :], prompt_starts[:, None])  # [U, P]
    causal = torch.ones(prompt_width, prompt_width, dtype=torch.bool).tril()
    # A padding query (past the prompt's end) still sees the prompt's real keys: no row is fully masked (NaN-free).
    prompt_mask = causal[None] & prompt_valid[:, None, :]  # [U, P, P]
    slot = torch.empty(num_tokens, dtype=torch.long)
    for number, (start, length) in enumerate(prompts):
        slot[start : start + length] = number * prompt_width + torch.arange(length)
    prompt_batch = SegmentBatch(prompt_index.to(device), prompt_index.to(device), prompt_mask[:, None].to(device))
    if not completions:
        return SegmentPlan(prompt_batch, None, slot.to(device))
    width = max(length for _, length, _ in completions)
    own = torch.arange(width)
    starts = torch.tensor([start for start, _, _ in completions])
    lengths = torch.tensor([length for _, length, _ in completions])
    owners = torch.tensor([prompt for _, _, prompt in completions])
    own_valid = own[None, :] < lengths[:, None]  # [M, C]
    own_index = torch.where(own_valid, starts[:, None] + own[None, :], starts[:, None])  # [M, C]
    key_index = torch.cat([prompt_index[owners], own_index], dim=1)  # [M, P + C]: the prompt's keys, then its own
    sees_prompt = prompt_valid[owners][:, None, :].expand(-1, width, -1)  # [M, C, P]
    sees_own = torch.ones(width, width, dtype=torch.bool).tril()[None] & own_valid[:, None, :]  # [M, C, C]
    completion_mask = torch.cat([sees_prompt, sees_own], dim=2)  # [M, C, P + C]
    offset = len(prompts) * prompt_width
    for number, (start, length, _) in enumerate(completions):
        slot[start : start + length] = offset + number * width + torch.arange(length)
    completion_batch = SegmentBatch(own_index.to(device), key_index.to(device), completion_mask[:, None].to(device))
    return SegmentPlan(prompt_batch, completion_batch, slot.to(device))


def _segment_attention(query, key, value, batch: SegmentBatch, *, scaling, dropout: float) -> torch.Tensor:
    """query [T, H, D], key/value [T, KV, D] -> output [S * Q, H, D] of `batch`'s segments."""
    queries = query[batch.query_index].transpose(1, 2)  # [S, H, Q, D]
    keys, values = key[batch.key_index].transpose(1, 2), value[batch.key_index].transpose(1, 2)  # [S, KV, K, D]
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=batch.mask, dropout_p=dropout, scale=scaling,
                                         enable_gqa=queries.shape[1] != keys.shape[1])  # [S, H, Q, D]
    return out.transpose(1, 2).reshape(-1, *out.shape[1:2], out.shape[-1])


def segment_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention-interface signature: query [1, H, T, D], key/value [1, KV, T, D] -> ([1, T, H, D], None).
    The mask argument is unused (None): the plan in kwargs[PLAN_KWARG] says who attends to whom."""
    plan: SegmentPlan = kwargs[PLAN_KWARG]
    query, key, value = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)  # [T, heads, D]
    outputs = [_segment_attention(query, key, value, plan.prompts, scaling=scaling, dropout=dropout)]
    if plan.completions is not None:
        outputs.append(_segment_attention(query, key, value, plan.completions, scaling=scaling, dropout=dropout))
    return torch.cat(outputs)[plan.slot].unsqueeze(0), None


_registered = False


def supports_segment_attention(hf_model) -> bool:
    """Whether the model's attention is plain scaled dot-product attention (what the segment batches compute):
    no logit soft-capping and no attention sinks."""
    config = hf_model.config
    if getattr(config, "attn_logit_softcapping", None) or getattr(config, "model_type", "") == "gpt_oss":
        return False
    return config._attn_implementation in ("sdpa", "eager")


@contextmanager
def segment_attention(hf_model):
    """Run `hf_model`'s attention as SEGMENT_ATTENTION inside the block (the forward must pass a plan as PLAN_KWARG)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(SEGMENT_ATTENTION, segment_attention_forward)
        _registered = True
    config = hf_model.config
    previous = config._attn_implementation
    config._attn_implementation = SEGMENT_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous
