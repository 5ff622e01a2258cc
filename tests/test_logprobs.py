"""Chunked completion log-probs equal the naive full-logits computation, with and without grad."""

import pytest
import torch

from train.logprobs import completion_logprobs, position_ids_from_mask

from conftest import make_tiny_model


def naive_logprobs(model, input_ids, attention_mask, width, temperature):
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)).logits
    logits = logits[:, -width - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, input_ids[:, -width:].unsqueeze(-1)).squeeze(-1)


def _batch(tokenizer):
    prompts = ["What is 2+2?", "Hi"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    completion = torch.tensor([[60, 61, 62, tokenizer.eos_token_id], [70, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.pad_token_id]])
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    return torch.cat([enc.input_ids, completion], 1), torch.cat([enc.attention_mask, completion_mask], 1)


@pytest.mark.parametrize("chunk_size", [0, 1, 3, 1000])
def test_chunked_equals_naive(tokenizer, chunk_size):
    model = make_tiny_model(tokenizer)
    input_ids, attention_mask = _batch(tokenizer)
    expected = naive_logprobs(model, input_ids, attention_mask, 4, temperature=0.7)
    got, entropy = completion_logprobs(model, input_ids, attention_mask, 4, temperature=0.7, chunk_size=chunk_size)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert entropy.shape == (2, 4) and (entropy >= 0).all()
    # Entropy of a V-way distribution is at most log V.
    assert (entropy <= torch.log(torch.tensor(float(len(tokenizer)))) + 1e-4).all()


def test_chunked_gradients_match_naive(tokenizer):
    model = make_tiny_model(tokenizer)
    input_ids, attention_mask = _batch(tokenizer)
    naive_logprobs(model, input_ids, attention_mask, 4, 1.0).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    got, _ = completion_logprobs(model, input_ids, attention_mask, 4, temperature=1.0, chunk_size=2)
    got.sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_left_padding_does_not_change_logprobs(tokenizer):
    """A prompt's completion log-probs are the same alone or left-padded in a batch (positions skip padding)."""
    model = make_tiny_model(tokenizer)
    input_ids, attention_mask = _batch(tokenizer)
    batched, _ = completion_logprobs(model, input_ids, attention_mask, 4, temperature=1.0, chunk_size=0)
    prompt_width = input_ids.shape[1] - 4
    pad = int((attention_mask[1, :prompt_width] == 0).sum())  # left padding of the short prompt
    assert pad > 0
    alone, _ = completion_logprobs(model, input_ids[1:, pad:], attention_mask[1:, pad:], 4, temperature=1.0, chunk_size=0)
    torch.testing.assert_close(batched[1, :2], alone[0, :2], atol=1e-5, rtol=1e-5)
