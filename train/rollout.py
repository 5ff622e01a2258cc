"""Sampling G completions per prompt into a RolloutBatch with masks and truncation flags.

Two samplers give the same distribution (temperature, then top-k, then top-p, then a multinomial draw, as HF
`generate` applies them; with the same seed they draw the same tokens, tests/test_rollout.py):

- `_sample_with_cache`, the default: a lean decode loop over the model's forward with a KV cache. On CPU, HF
  `generate` spends most of a tiny model's decode step in per-token Python (logits-processor and stopping-criteria
  lists, model-kwargs bookkeeping, a `prepare_inputs_for_generation` pass); this loop does only the forward, the
  warpers and the draw. Measured in benchmarks/results_grpo_vs_trl.md.
- HF `generate`, kept for what the lean loop does not do: ZeRO-3 lock-step decoding (`synced_gpus`, where every rank
  must keep calling forward until all are done) and checkpoints whose generation_config adds logits processors of
  its own (e.g. an instruct model's `repetition_penalty`), which `generate` applies on top of our arguments.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch

from train.batch import RolloutBatch
from train.logprobs import position_ids_from_mask
from train.tool_rollout import tool_rollouts
from train.tools import ToolSettings

# generation_config fields with which HF `generate` changes the sampling distribution beyond temperature/top-k/top-p
# (which we always pass explicitly) or decodes differently (beams), each with the values that leave it inactive. A
# checkpoint that sets any of them to another value is sampled by `generate` itself, so its behaviour does not change.
_NEUTRAL_GENERATION_SETTINGS = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "sequence_bias": (None,), "min_length": (None, 0),
    "min_new_tokens": (None, 0), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []), "exponential_decay_length_penalty": (None,), "remove_invalid_values": (None, False),
    "renormalize_logits": (None, False), "guidance_scale": (None, 1.0), "watermarking_config": (None,), "min_p": (None, 0.0),
    "typical_p": (None, 1.0), "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "top_h": (None,), "num_beams": (None, 1),
    "penalty_alpha": (None,), "stop_strings": (None,), "prompt_lookup_num_tokens": (None,), "assistant_model": (None,),
}


@dataclass(frozen=True)
class SamplingParams:
    """How completions are sampled (rollout.* keys of the same names): built once from the config, passed as one value
    to rollouts, evaluation, the preflight and `thinkrl sample`."""

    max_completion_length: int
    temperature: float
    top_p: float
    top_k: int  # 0: no top-k filter
    tools: ToolSettings | None = None  # rollout.tools: multi-turn rollouts with the Python tool (train/tool_rollout.py)


def _completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """completion_ids [N, L] -> (mask [N, L] with 1 up to and including the first EOS, truncated [N] bool)."""
    is_eos = completion_ids == eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, completion_ids.shape[1], dtype=torch.long))
    positions = torch.arange(completion_ids.shape[1], device=completion_ids.device).expand_as(completion_ids)
    mask = (positions <= first_eos.unsqueeze(1)).long()
    return mask, ~has_eos


def _uses_hf_generate(model, synced_gpus: bool) -> bool:
    """True when only HF `generate` does what is asked: lock-step ZeRO-3 decoding, an encoder-decoder, or a
    generation_config that adds logits processors of its own (see _NEUTRAL_GENERATION_SETTINGS)."""
    if synced_gpus or getattr(model.config, "is_encoder_decoder", False):
        return True
    generation_config = getattr(model, "generation_config", None)
    if generation_config is None:
        return False
    return any(getattr(generation_config, name, None) not in neutral for name, neutral in _NEUTRAL_GENERATION_SETTINGS.items())


def _warp_logits(scores: torch.Tensor, *, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """scores [N, V] float32 -> [N, V] with filtered tokens at -inf: HF's TemperatureLogitsWarper, TopKLogitsWarper and
    TopPLogitsWarper (min_tokens_to_keep=1), in the order `generate` applies them, op for op so that the same seed
    draws the same tokens (transformers/generation/logits_process.py)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k > 0:
        kth_best = torch.topk(scores, min(top_k, scores.shape[-1]))[0][..., -1, None]
        scores = scores.masked_fill(scores < kth_best, -float("inf"))
    if top_p < 1.0:
        sorted_scores, sorted_indices = torch.sort(scores, descending=False)
        remove = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False  # always keep the most likely token
        scores = scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    return scores


def _forward_kwargs(model) -> tuple[str, bool]:
    """(name of the KV-cache argument of model.forward, whether it takes logits_to_keep). transformers 5 renamed
    `past_key_values` to `cache`; the project supports both."""
    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def _new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)  # sliding-window / hybrid layers as the config declares them
    except TypeError:  # transformers before 4.56 take no config
        return DynamicCache()


# Finished rows leave the decode batch once at most this fraction of the batch is still decoding: each compaction
# copies the KV cache, so it is done in steps, not at every finished row.
COMPACT_BELOW = 0.75


@torch.no_grad()
def _sample_with_cache(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    num_generations: int,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    stop=None,
) -> torch.Tensor:
    """prompt_ids, prompt_mask [b, P] (left-padded, one row per prompt) -> completion ids [b*G, L'] (group-major),
    L' <= max_new_tokens.

    What HF `generate` computes for the prompts repeated G times (same forward, warpers and draw; a row that has emitted
    EOS gets `pad_token_id` from then on; stops when every row has emitted EOS), minus its per-token bookkeeping, minus
    G-1 of the G identical prompt forwards (each prompt runs once and its KV cache is repeated G times), and minus the
    forwards of finished rows: once at most COMPACT_BELOW of the decode batch is unfinished, the finished rows leave it
    (their cache rows are dropped). The draw still covers all N rows (finished ones get a dummy distribution and then
    pad), so the random stream, and with it every sampled token, is the same as `generate`'s for the same seed.
    Positions skip the left padding, as in `generate` and train/logprobs.py. `stop(tokens so far [N, t], unfinished
    [N]) -> [N] bool` ends rows after the step's token, as a StoppingCriteria does in `generate` (tool calls).
    """
    device = prompt_ids.device
    cache_kwarg, takes_logits_to_keep = _forward_kwargs(model)
    cache = _new_cache(model)
    extra = {cache_kwarg: cache, **({"logits_to_keep": 1} if takes_logits_to_keep else {})}
    positions = position_ids_from_mask(prompt_mask)  # [b, P]: the positions the log-prob forward recomputes
    logits = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True, **extra).logits
    cache.batch_repeat_interleave(num_generations)
    prompt_mask, positions = prompt_mask.repeat_interleave(num_generations, dim=0), positions.repeat_interleave(num_generations, dim=0)
    scores = logits[:, -1].float().repeat_interleave(num_generations, dim=0)  # [N, V]
    num_rows, prompt_length = prompt_mask.shape
    # One mask for the whole rollout; step t attends over its first P+t columns (new tokens are always attended).
    attention_mask = torch.ones(num_rows, prompt_length + max_new_tokens, dtype=prompt_mask.dtype, device=device)
    attention_mask[:, :prompt_length] = prompt_mask
    tokens = torch.full((num_rows, max_new_tokens), pad_token_id, dtype=prompt_ids.dtype, device=device)  # [N, L]
    unfinished = torch.ones(num_rows, dtype=torch.bool, device=device)
    decoding = torch.arange(num_rows, device=device)  # rows in the decode batch (the cache's rows), ascending
    steps = 0
    while True:
        if do_sample:
            probs = torch.softmax(_warp_logits(scores, temperature=temperature, top_k=top_k, top_p=top_p), dim=-1)
            next_tokens = _multinomial_draw(probs)
        else:
            next_tokens = scores.argmax(dim=-1)
        next_tokens = torch.where(unfinished, next_tokens, pad_token_id)
        tokens[:, steps] = next_tokens
        unfinished &= next_tokens != eos_token_id
        if stop is not None:
            unfinished &= ~stop(tokens[:, : steps + 1], unfinished)
        steps += 1
        if steps == max_new_tokens or not unfinished.any():
            return tokens[:, :steps]
        live = unfinished[decoding]
        if live.sum() <= COMPACT_BELOW * decoding.numel():
            keep = live.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            decoding, attention_mask, positions = decoding[keep], attention_mask[keep], positions[keep]
        positions = positions[:, -1:] + 1
        step_logits = model(
            input_ids=next_tokens[decoding].unsqueeze(1), attention_mask=attention_mask[:, : prompt_length + steps],
            position_ids=positions, use_cache=True, **extra,
        ).logits[:, -1].float()  # [rows decoding, V]
        if decoding.numel() == num_rows:
            scores = step_logits
        else:  # finished rows: a uniform dummy (any valid distribution; the draw is replaced by pad), same shape
            scores = step_logits.new_zeros(num_rows, step_logits.shape[-1]).index_copy_(0, decoding, step_logits)


def _multinomial_draw(probs: torch.Tensor) -> torch.Tensor:
    """probs [N, V] -> one token per row: `torch.multinomial(probs, 1)`'s draw, the same numbers from the same random
    stream, computed faster on CPU.

    torch draws one sample per row as argmax(probs / q) with q ~ Exp(1) from `exponential_` (ATen's multinomial:
    argmax(log p + Gumbel) = argmax(p / q)). On CPU `exponential_` is a serial loop of scalar log1p over doubles, 62 ms
    for 64 x 49,152 draws: a fifth of a SmolLM2 decode step at 64 rows. It computes q = -log1p(-u) from u drawn like
    `torch.rand(float64)` (53 bits of one 64-bit draw each, the same generator calls), then rounds to float32; here u
    comes from `torch.rand` and log1p runs vectorised on both cores (20 ms). Used where `_exponential_is_vectorisable`
    found the two bit-identical on this torch build (random stream state included), float32 on CPU only; elsewhere
    `torch.multinomial` itself."""
    if probs.device.type != "cpu" or probs.dtype != torch.float32 or not _exponential_is_vectorisable():
        return torch.multinomial(probs, num_samples=1).squeeze(1)
    exponential = torch.log1p(torch.rand(probs.shape, dtype=torch.float64).neg_()).neg_().to(torch.float32)  # q ~ Exp(1)
    return (probs / exponential).argmax(dim=-1)


@functools.cache
def _exponential_is_vectorisable() -> bool:
    """Whether `exponential_` of float32 equals float32(-log1p(-torch.rand(float64))) bit for bit on this torch build,
    leaving the generator in the same state (checked once, on 2**16 draws of a private generator)."""
    by_torch, by_rand = torch.Generator().manual_seed(20261206), torch.Generator().manual_seed(20261206)
    expected = torch.empty(2**16).exponential_(generator=by_torch)
    got = torch.log1p(torch.rand(2**16, dtype=torch.float64, generator=by_rand).neg_()).neg_().to(torch.float32)
    return torch.equal(got, expected) and torch.equal(by_torch.get_state(), by_rand.get_state())


def left_pad(prompt_ids: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[b] token-id lists -> (ids [b, P], mask [b, P]), left-padded so every prompt ends at column P-1 and every
    completion starts at column P."""
    width = max(len(ids) for ids in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, tokens in enumerate(prompt_ids):
        if tokens:
            ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            mask[row, width - len(tokens) :] = 1
    return ids.to(device), mask.to(device)


class _StopRule:
    """A per-step stop rule (train/tools.py::CallDetector) as HF `generate`'s StoppingCriteria: called after the
    step's token is appended, [N] bool back."""

    def __init__(self, stop, prompt_width: int):
        self.stop, self.prompt_width = stop, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return self.stop(input_ids[:, self.prompt_width :]).to(input_ids.device)


def _single_turn(model, tokenizer, prompt_ids: list[list[int]], num_generations: int, max_new_tokens: int, stop, *,
                 sampling: SamplingParams, device, synced_gpus: bool, do_sample: bool) -> torch.Tensor:
    """One decoding pass: completion ids [b*G, L'] (group-major, pad after each row's end), L' <= max_new_tokens."""
    unique_ids, unique_mask = left_pad(prompt_ids, tokenizer.pad_token_id, device)  # [b, P]
    if not _uses_hf_generate(model, synced_gpus):
        return _sample_with_cache(
            model, unique_ids, unique_mask, num_generations=num_generations, max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=do_sample,
            temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, stop=stop,
        )
    from transformers import StoppingCriteriaList

    # Greedy: sampling arguments set to None so a checkpoint's own generation_config (e.g. temperature 0.7) neither
    # applies nor triggers transformers' "flag only used in sample mode" warning.
    warpers = (dict(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k if sampling.top_k > 0 else None)
               if do_sample else dict(temperature=None, top_p=None, top_k=None))
    rows, mask = unique_ids.repeat_interleave(num_generations, dim=0), unique_mask.repeat_interleave(num_generations, dim=0)
    output = model.generate(
        input_ids=rows, attention_mask=mask, do_sample=do_sample, **warpers, max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, synced_gpus=synced_gpus, use_cache=True,
        **({"stopping_criteria": StoppingCriteriaList([_StopRule(stop, rows.shape[1])])} if stop is not None else {}),
    )
    return output[:, rows.shape[1] :]


@torch.no_grad()
def generate_rollouts(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    *,
    num_generations: int,
    sampling: SamplingParams,
    device: torch.device,
    synced_gpus: bool = False,
    do_sample: bool = True,
) -> RolloutBatch:
    """Sample `num_generations` completions for each of the b prompts (group-major rows, N = b*G; b = B/W in training), at most
    `sampling.max_completion_length` tokens each (model and tool tokens together when `sampling.tools` is set).

    prompt_ids: [b] token ids of the prompts, as `data.prompts.prepare_prompts` made them (the one tokenisation).
    synced_gpus: ranks decode in lock-step (Engine.lockstep). do_sample: False decodes greedily (evaluation); the
    temperature, top-p and top-k are then ignored."""
    unique_ids, unique_mask = left_pad(prompt_ids, tokenizer.pad_token_id, device)  # [b, P]
    prompt_ids_rows = unique_ids.repeat_interleave(num_generations, dim=0)  # [N, P]
    prompt_mask = unique_mask.repeat_interleave(num_generations, dim=0)  # [N, P]
    was_training = model.training
    model.eval()
    single_turn = functools.partial(_single_turn, model, tokenizer, sampling=sampling, device=device,
                                    synced_gpus=synced_gpus, do_sample=do_sample)
    model_token_mask = tool_calls = tools = None
    if sampling.tools is not None:
        tools = tool_rollouts(single_turn, tokenizer, prompt_ids, num_generations=num_generations,
                              max_completion_length=sampling.max_completion_length, settings=sampling.tools,
                              synced_gpus=synced_gpus)
        completion_ids, completion_mask, truncated = (t.to(device) for t in (tools.completion_ids, tools.completion_mask, tools.truncated))
        model_token_mask, tool_calls = tools.model_token_mask.to(device), tools.tool_calls
    else:
        completion_ids = single_turn(prompt_ids, num_generations, sampling.max_completion_length, None)
        if completion_ids.shape[1] == 0:  # every row hit EOS immediately is impossible (EOS is kept), but guard anyway
            completion_ids = torch.full((prompt_ids_rows.shape[0], 1), tokenizer.eos_token_id, device=device, dtype=prompt_ids_rows.dtype)
        completion_mask, truncated = _completion_mask(completion_ids, tokenizer.eos_token_id)
    model.train(was_training)
    # Tokens after the first EOS are padding: set them to pad so recomputed log-probs never see sampled garbage.
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    batch = RolloutBatch(
        input_ids=torch.cat([prompt_ids_rows, completion_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),
        completion_mask=completion_mask,
        prompt_length=prompt_ids_rows.shape[1],
        group_size=num_generations,
        completion_texts=[],
        truncated=truncated,
        model_token_mask=model_token_mask,
        tool_calls=tool_calls,
        tool_seconds={"tool_wait": tools.tool_wait_seconds, "tools": tools.tool_seconds} if tools is not None else None,
    )
    batch.completion_texts = tokenizer.batch_decode(batch.completion_ids, skip_special_tokens=True)
    return batch
