"""Sampling groups: shapes, group-major layout, EOS handling, masks, truncation flags."""

import torch

from train.rollout import _completion_mask, generate_rollouts

from conftest import make_tiny_model


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
        model, tokenizer, prompts, num_generations=3, max_completion_length=12, temperature=1.0, top_p=1.0, top_k=0,
        device=torch.device("cpu"),
    )
    N, L = 6, batch.completion_mask.shape[1]
    assert batch.input_ids.shape == (N, batch.prompt_length + L) and L <= 12
    assert batch.prompt_texts == [prompts[0]] * 3 + [prompts[1]] * 3  # group-major
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
        model, tokenizer, ["Q"], num_generations=4, max_completion_length=16, temperature=1.0, top_p=1.0, top_k=0,
        device=torch.device("cpu"),
    )
    assert len(set(batch.completion_texts)) > 1
