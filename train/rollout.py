"""Sampling G completions per prompt with HF `generate`, into a RolloutBatch with masks and truncation flags."""

from __future__ import annotations

import contextlib

import torch

from train.batch import RolloutBatch


@contextlib.contextmanager
def generation_model(engine, *, zero_stage: int, gather_zero3_params: bool):
    """The HF module to call `generate` on.

    Under ZeRO-3 each rank holds a shard of every weight. Gathering them per forward would cost one all-gather per
    layer per generated token, so (like TRL's `unwrap_model_for_generation`) we gather the full weights once for the
    whole rollout and detach DeepSpeed's fetch hooks meanwhile. With gather disabled, ranks generate in lock-step
    (`synced_gpus`) so the per-layer gathers line up.
    """
    module = getattr(engine, "module", engine)
    if zero_stage == 3 and gather_zero3_params:
        from deepspeed.runtime.zero import unwrap_model_for_generation

        with unwrap_model_for_generation(engine):
            yield module
    else:
        yield module


def _completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """completion_ids [N, L] -> (mask [N, L] with 1 up to and including the first EOS, truncated [N] bool)."""
    is_eos = completion_ids == eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, completion_ids.shape[1], dtype=torch.long))
    positions = torch.arange(completion_ids.shape[1], device=completion_ids.device).expand_as(completion_ids)
    mask = (positions <= first_eos.unsqueeze(1)).long()
    return mask, ~has_eos


@torch.no_grad()
def generate_rollouts(
    model,
    tokenizer,
    prompts: list[str],
    *,
    num_generations: int,
    max_completion_length: int,
    temperature: float,
    top_p: float,
    top_k: int,
    device: torch.device,
    add_special_tokens: bool = False,
    synced_gpus: bool = False,
    do_sample: bool = True,
) -> RolloutBatch:
    """Sample `num_generations` completions for each of the B prompts (group-major rows, N = B*G).

    add_special_tokens: False for chat-template prompts (the template already wrote BOS), True for plain text.
    do_sample: False decodes greedily (evaluation); the sampling arguments are then ignored."""
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens, padding_side="left")
    prompt_ids = encoded["input_ids"].to(device).repeat_interleave(num_generations, dim=0)  # [N, P]
    prompt_mask = encoded["attention_mask"].to(device).repeat_interleave(num_generations, dim=0)  # [N, P]
    was_training = model.training
    model.eval()
    # Greedy: sampling arguments set to None so a checkpoint's own generation_config (e.g. temperature 0.7) neither
    # applies nor triggers transformers' "flag only used in sample mode" warning.
    sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k if top_k > 0 else None) if do_sample else dict(temperature=None, top_p=None, top_k=None)
    output = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        do_sample=do_sample,
        **sampling,
        max_new_tokens=max_completion_length,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        synced_gpus=synced_gpus,
        use_cache=True,
    )
    model.train(was_training)
    prompt_length = prompt_ids.shape[1]
    completion_ids = output[:, prompt_length:]  # [N, L'] with L' <= max_completion_length
    if completion_ids.shape[1] == 0:  # every row hit EOS immediately is impossible (EOS is kept), but guard anyway
        completion_ids = torch.full((output.shape[0], 1), tokenizer.eos_token_id, device=device, dtype=output.dtype)
    completion_mask, truncated = _completion_mask(completion_ids, tokenizer.eos_token_id)
    # Tokens after the first EOS are padding: set them to pad so recomputed log-probs never see sampled garbage.
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return RolloutBatch(
        input_ids=torch.cat([prompt_ids, completion_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),
        completion_mask=completion_mask,
        prompt_length=prompt_length,
        completion_texts=texts,
        prompt_texts=[p for p in prompts for _ in range(num_generations)],
        truncated=truncated,
    )
