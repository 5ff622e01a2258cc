"""Sampling groups: shapes, group-major layout, EOS handling, masks, truncation flags."""

import pytest
import torch

from train import rollout
from train.rollout import SamplingParams, _completion_mask, generate_rollouts

from helpers import encode_prompts, make_tiny_model


def test_completion_mask_up_to_first_eos():
    eos = 9
    ids = torch.tensor([[1, 2, eos, 3, eos], [eos, 1, 1, 1, 1], [1, 2, 3, 4, 5]])
    mask, truncated = _completion_mask(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_generate_groups_shapes_and_masks(tokenizer):
    torch.manual_seed(0)
    model = make_tiny_model(tokenizer)
    prompts = ["What is 1+1? <think>", "Hi"]
    batch = generate_rollouts(
        model, tokenizer, encode_prompts(tokenizer, prompts), num_generations=3, sampling=SamplingParams(12, temperature=1.0, top_p=1.0, top_k=0),
        device=torch.device("cpu"),
    )
    N, L = 6, batch.completion_mask.shape[1]
    assert batch.input_ids.shape == (N, batch.prompt_length + L) and L <= 12
    assert batch.group_size == 3 and batch.per_completion(prompts) == [prompts[0]] * 3 + [prompts[1]] * 3  # group-major
    prompt_part = batch.input_ids[:, : batch.prompt_length]
    assert all(torch.equal(prompt_part[row], prompt_part[(row // 3) * 3]) for row in range(N))
    assert not torch.equal(prompt_part[0], prompt_part[3])
    assert len(batch.completion_texts) == N
    # The attention mask is the prompt mask followed by the completion mask.
    assert torch.equal(batch.attention_mask[:, batch.prompt_length :], batch.completion_mask)
    completion = batch.completion_ids
    for row in range(N):
        valid = int(batch.completion_mask[row].sum())
        if batch.truncated[row]:
            assert valid == L == 12 and tokenizer.eos_token_id not in completion[row].tolist()
        else:
            assert completion[row, valid - 1] == tokenizer.eos_token_id  # EOS is the last valid token, kept for training
            assert (completion[row, valid:] == tokenizer.pad_token_id).all()
    # Decoded text matches the valid tokens (minus EOS).
    row = 0
    valid = int(batch.completion_mask[row].sum())
    assert batch.completion_texts[row] == tokenizer.decode(completion[row, :valid], skip_special_tokens=True)


def test_generation_samples_differ_within_group(tokenizer):
    torch.manual_seed(1)
    model = make_tiny_model(tokenizer)
    batch = generate_rollouts(
        model, tokenizer, encode_prompts(tokenizer, ["Q"]), num_generations=4, sampling=SamplingParams(16, temperature=1.0, top_p=1.0, top_k=0),
        device=torch.device("cpu"),
    )
    assert len(set(batch.completion_texts)) > 1


# The lean sampler (train/rollout.py::_sample_with_cache) against HF `generate`, the path it replaces. Prompts of
# different lengths (so left padding matters) and an LM-head hook that makes EOS win at data-dependent steps, so rows
# stop at different lengths and the "finished rows get pad" and "stop when all are done" rules are exercised.
PROMPTS = ["What is 12+30? <think>", "Hi", "A longer prompt, with more words in it than the others <think>"]


def _eos_model(tokenizer, *, every: int):
    """Tiny model whose EOS logit becomes the largest wherever the otherwise-best token id is divisible by `every`."""
    model = make_tiny_model(tokenizer)
    eos = tokenizer.eos_token_id

    def boost_eos(module, args, logits):
        best = logits.max(dim=-1)
        logits = logits.clone()
        logits[..., eos] = torch.where(best.indices % every == 0, best.values + 1.0, logits[..., eos])
        return logits

    model.get_output_embeddings().register_forward_hook(boost_eos)
    return model


def _rollouts(model, tokenizer, seed: int, do_sample: bool = True, **sampling):
    torch.manual_seed(seed)
    return generate_rollouts(model, tokenizer, encode_prompts(tokenizer, PROMPTS), num_generations=3,
                             sampling=SamplingParams(max_completion_length=20, **sampling), device=torch.device("cpu"),
                             do_sample=do_sample)


def _assert_same_batch(a, b):
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.attention_mask, b.attention_mask)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert torch.equal(a.truncated, b.truncated)
    assert a.prompt_length == b.prompt_length and a.completion_texts == b.completion_texts


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_lean_greedy_equals_hf_generate(tokenizer, monkeypatch, attn):
    model = _eos_model(tokenizer, every=3)
    model.config._attn_implementation = attn
    lean = _rollouts(model, tokenizer, 0, do_sample=False, temperature=1.0, top_p=1.0, top_k=0)
    monkeypatch.setattr(rollout, "_uses_hf_generate", lambda *args: True)
    hf = _rollouts(model, tokenizer, 0, do_sample=False, temperature=1.0, top_p=1.0, top_k=0)
    _assert_same_batch(lean, hf)
    lengths = lean.completion_lengths.tolist()
    assert len(set(lengths)) > 1 and not lean.truncated.all()  # rows did stop at different steps


@pytest.mark.parametrize("sampling", [dict(temperature=1.0, top_p=1.0, top_k=0), dict(temperature=0.7, top_p=0.9, top_k=20)])
def test_lean_sampling_draws_what_hf_generate_draws(tokenizer, monkeypatch, sampling):
    """Same warpers, same order, same multinomial call: with the same seed the very same tokens come out, which is
    the strongest form of 'same distribution'."""
    model = _eos_model(tokenizer, every=7)
    lean = _rollouts(model, tokenizer, 3, **sampling)
    monkeypatch.setattr(rollout, "_uses_hf_generate", lambda *args: True)
    hf = _rollouts(model, tokenizer, 3, **sampling)
    _assert_same_batch(lean, hf)
    assert len(set(lean.completion_texts)) > 1


def test_warp_logits_top_k_and_top_p():
    scores = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    # top_k=2 keeps the two best; top_p=0.7 keeps the smallest set with mass >= 0.7: {0.5, 0.25}.
    assert torch.isinf(rollout._warp_logits(scores, temperature=1.0, top_k=2, top_p=1.0)).tolist() == [[False, False, True, True]]
    assert torch.isinf(rollout._warp_logits(scores, temperature=1.0, top_k=0, top_p=0.7)).tolist() == [[False, False, True, True]]
    # temperature 0.5 divides the scores by 0.5 and removes nothing.
    warped = rollout._warp_logits(scores, temperature=0.5, top_k=0, top_p=1.0)
    torch.testing.assert_close(warped, scores * 2)


def test_generation_config_processors_and_synced_gpus_use_hf_generate(tokenizer, monkeypatch):
    """A checkpoint whose generation_config adds a logits processor (an instruct model's repetition_penalty) keeps
    being sampled by `generate`, which applies it; so does lock-step ZeRO-3 decoding."""
    model = make_tiny_model(tokenizer)
    assert not rollout._uses_hf_generate(model, synced_gpus=False)
    assert rollout._uses_hf_generate(model, synced_gpus=True)
    model.generation_config.repetition_penalty = 1.3
    assert rollout._uses_hf_generate(model, synced_gpus=False)
    via_default = _rollouts(model, tokenizer, 5, do_sample=False, temperature=1.0, top_p=1.0, top_k=0)
    monkeypatch.setattr(rollout, "_sample_with_cache", None)  # would raise if called
    torch.manual_seed(5)
    via_generate = _rollouts(model, tokenizer, 5, do_sample=False, temperature=1.0, top_p=1.0, top_k=0)
    _assert_same_batch(via_default, via_generate)


def test_neutral_generation_config_values_keep_the_lean_sampler(tokenizer):
    """Checkpoints often spell out inactive settings (repetition_penalty 1.0, num_beams 1): no reason to fall back."""
    model = make_tiny_model(tokenizer)
    model.generation_config.repetition_penalty = 1.0
    model.generation_config.num_beams = 1
    model.generation_config.no_repeat_ngram_size = 0
    assert not rollout._uses_hf_generate(model, synced_gpus=False)
    model.generation_config.no_repeat_ngram_size = 3
    assert rollout._uses_hf_generate(model, synced_gpus=False)


def test_finished_rows_leave_the_decode_batch(tokenizer, monkeypatch):
    """The lean sampler runs fewer decode rows once rows have emitted EOS (and the draws above still equal
    `generate`'s); HF `generate` keeps computing all N rows to the end."""
    model = _eos_model(tokenizer, every=3)
    rows_per_forward = []
    model.get_decoder().register_forward_hook(lambda module, args, kwargs, out: rows_per_forward.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    lean = _rollouts(model, tokenizer, 0, do_sample=False, temperature=1.0, top_p=1.0, top_k=0)
    lean_rows, rows_per_forward[:] = list(rows_per_forward), []
    monkeypatch.setattr(rollout, "_uses_hf_generate", lambda *args: True)
    _rollouts(model, tokenizer, 0, do_sample=False, temperature=1.0, top_p=1.0, top_k=0)
    N, steps = lean.input_ids.shape[0], lean.completion_mask.shape[1]
    assert lean_rows[0] == len(PROMPTS) and len(lean_rows) == steps  # one prompt forward, then steps-1 decode forwards
    assert min(lean_rows[1:]) < N and lean_rows[1:] == sorted(lean_rows[1:], reverse=True)
    assert sum(lean_rows[1:]) < sum(rows_per_forward[1:]) == N * (steps - 1)


def test_multinomial_draw_is_torch_multinomial():
    """The sampler's draw (train/rollout.py::_multinomial_draw, a vectorised exponential) picks what
    torch.multinomial(probs, 1) picks from the same seed, and leaves the default generator where multinomial does."""
    assert rollout._exponential_is_vectorisable()
    logits = torch.randn(64, 3000, generator=torch.Generator().manual_seed(0)) * 3
    logits[:, :10] = float("-inf")  # tokens a warper removed: probability 0, never drawn
    probs = torch.softmax(logits, dim=-1)
    torch.manual_seed(7)
    expected = torch.multinomial(probs, num_samples=1).squeeze(1)
    state_after_multinomial = torch.get_rng_state()
    torch.manual_seed(7)
    got = rollout._multinomial_draw(probs)
    assert torch.equal(got, expected) and (got >= 10).all()
    assert torch.equal(torch.get_rng_state(), state_after_multinomial)
