"""Chunked completion log-probs equal the naive full-logits computation, with and without grad, with shared prompts and
with the vocabulary-aware chunk cap."""

import pytest
import torch

from train import logprobs as logprobs_module
from train.logprobs import completion_logprobs, position_ids_from_mask

from helpers import make_tiny_model


def naive_logprobs(model, input_ids, attention_mask, width, temperature):
    """Full logits, log-softmax, gather; padding positions of the completion (attention mask 0) scored 0."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)).logits
    logits = logits[:, -width - 1 : -1].float() / temperature
    logprobs = torch.log_softmax(logits, -1).gather(-1, input_ids[:, -width:].unsqueeze(-1)).squeeze(-1)
    return logprobs * attention_mask[:, -width:]


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
    # The LM head runs on scored tokens only: row 1's two padding positions are exactly 0, log-prob and entropy.
    assert got[1, 2:].tolist() == [0.0, 0.0] and entropy[1, 2:].tolist() == [0.0, 0.0] and (entropy[:, :2] > 0).all()
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


def _group_batch(tokenizer, group_size=3):
    """Two prompts of different lengths (so different left padding), each repeated for a group of completions of
    which some end early (EOS, then padding), as generate_rollouts lays them out."""
    enc = tokenizer(["What is 2+2? <think>", "Hi"], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    prompt_ids, prompt_mask = enc.input_ids.repeat_interleave(group_size, 0), enc.attention_mask.repeat_interleave(group_size, 0)
    generator = torch.Generator().manual_seed(0)
    completion = torch.randint(0, 256, (2 * group_size, 5), generator=generator)
    completion_mask = torch.ones_like(completion)
    for row, length in [(1, 3), (4, 1)]:
        completion[row, length - 1] = tokenizer.eos_token_id
        completion[row, length:] = tokenizer.pad_token_id
        completion_mask[row, length:] = 0
    return torch.cat([prompt_ids, completion], 1), torch.cat([prompt_mask, completion_mask], 1), completion_mask


def _packed_length(attention_mask, width):
    """Tokens of the packed sequence: each distinct prompt's real tokens once (rows 0 and 3 of _group_batch start the
    two groups), then every completion without its last token."""
    prompts = int(attention_mask[[0, 3], :-width].sum())
    return prompts + int((attention_mask[:, -width:].sum(dim=1) - 1).clamp(min=0).sum())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("path", ["packed", "packed_dense_mask", "shared_prompt"])
@pytest.mark.parametrize("row_order", ["as_sampled", "reversed"])
def test_shared_prompt_forward_equals_naive_values_and_gradients(tokenizer, monkeypatch, attn, path, row_order):
    """Rows with the same prompt run it once: the same log-probs and gradients as one full forward per row, and the
    path is really taken. packed: ONE decoder call on one sequence of the two prompts and the completions without
    padding (train/logprobs.py::_packed_hidden), attention segment by segment (train/packed_attention.py);
    packed_dense_mask: the same sequence with a [T, T] block mask (the model's own attention, as under activation
    checkpointing); shared_prompt (taken when packing is not possible): the prompts, 2 rows, not 6, then the
    completions, KV cache indexed out to the group. Reversed rows put the groups in another order than torch.unique
    sorts the prompts in (the packed sequence's order): results still come back per row."""
    from train import logprobs

    if path == "shared_prompt":
        monkeypatch.setattr(logprobs, "MAX_PACKED_TOKENS", 0)
    if path == "packed_dense_mask":
        monkeypatch.setattr(logprobs, "supports_segment_attention", lambda model: False)
    plans, make_plan = [], logprobs.segment_plan  # counts the forwards that take segment attention
    monkeypatch.setattr(logprobs, "segment_plan", lambda *args: plans.append(make_plan(*args)) or plans[-1])
    model = make_tiny_model(tokenizer)
    model.config._attn_implementation = attn
    input_ids, attention_mask, completion_mask = _group_batch(tokenizer)
    if row_order == "reversed":
        input_ids, attention_mask, completion_mask = input_ids.flip(0), attention_mask.flip(0), completion_mask.flip(0)
    expected = naive_logprobs(model, input_ids, attention_mask, 5, temperature=0.7)
    (expected * completion_mask).sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    shapes = []
    model.get_decoder().register_forward_pre_hook(lambda m, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    got, _ = completion_logprobs(model, input_ids, attention_mask, 5, temperature=0.7, chunk_size=4)
    if path.startswith("packed"):
        assert shapes == [(1, _packed_length(attention_mask, 5))]
    else:
        assert [rows for rows, _ in shapes] == [2, 6]
    assert len(plans) == (path == "packed")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    (got * completion_mask).sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_segment_plan_by_hand():
    """Packed sequence [p0 p1 | c0 c1 | d0] (T = 5): one prompt of 2 tokens, then two completions of 2 and 1 tokens
    (the tokens that run through the decoder). Prompt queries see the prompt causally; a completion's queries see the
    whole prompt and their own earlier tokens, never the other completion; padding slots are masked."""
    from train.packed_attention import segment_plan

    plan = segment_plan([(0, 2)], [(2, 2, 0), (4, 1, 0)], 5, "cpu")
    assert plan.prompts.query_index.tolist() == [[0, 1]]
    assert plan.prompts.mask[:, 0].tolist() == [[[True, False], [True, True]]]
    completions = plan.completions
    assert completions.query_index.tolist() == [[2, 3], [4, 4]]  # the second completion's padding slot repeats 4
    assert completions.key_index.tolist() == [[0, 1, 2, 3], [0, 1, 4, 4]]
    assert completions.mask[:, 0].tolist() == [
        [[True, True, True, False], [True, True, True, True]],
        [[True, True, True, False], [True, True, True, False]],  # the padding query still sees the prompt: no NaN
    ]
    # outputs: prompt slots 0, 1; completion slots 2 + (row * 2 + column)
    assert plan.slot.tolist() == [0, 1, 2, 3, 4]


def test_segment_attention_equals_the_block_mask():
    """The segment batches give the dense block-mask attention's outputs and gradients on a random packed sequence of
    two groups with GQA (4 query heads over 2 key/value heads)."""
    from types import SimpleNamespace

    from train.packed_attention import PLAN_KWARG, segment_attention_forward, segment_plan

    prompts, completions = [(0, 3), (9, 2)], [(3, 4, 0), (7, 2, 0), (11, 3, 1)]
    T, D = 14, 8
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 4, T, D, generator=generator, requires_grad=True)
    key = torch.randn(1, 2, T, D, generator=generator, requires_grad=True)
    value = torch.randn(1, 2, T, D, generator=generator, requires_grad=True)
    owner = torch.full((T,), -1)
    group = torch.zeros(T, dtype=torch.long)
    for number, (start, length) in enumerate(prompts):
        group[start : start + length] = number
    for number, (start, length, prompt) in enumerate(completions):
        owner[start : start + length], group[start : start + length] = number, prompt
    visible = torch.ones(T, T, dtype=torch.bool).tril() & (group[:, None] == group[None, :]) & (
        (owner[None, :] < 0) | (owner[:, None] == owner[None, :]))
    dense = torch.nn.functional.scaled_dot_product_attention(query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1),
                                                            attn_mask=visible, scale=0.3).transpose(1, 2)
    segments, _ = segment_attention_forward(SimpleNamespace(), query, key, value, None, scaling=0.3,
                                            **{PLAN_KWARG: segment_plan(prompts, completions, T, "cpu")})
    torch.testing.assert_close(segments, dense)
    weights = torch.randn(dense.shape, generator=generator)
    dense_grads = torch.autograd.grad((dense * weights).sum(), (query, key, value))
    segment_grads = torch.autograd.grad((segments * weights).sum(), (query, key, value))
    for got, expected in zip(segment_grads, dense_grads):
        torch.testing.assert_close(got, expected)


def test_shared_prompt_forward_with_one_token_completions(tokenizer):
    model = make_tiny_model(tokenizer)
    input_ids, attention_mask, _ = _group_batch(tokenizer)
    input_ids, attention_mask = input_ids[:, :-4], attention_mask[:, :-4]  # L = 1: only the prompt forward is needed
    expected = naive_logprobs(model, input_ids, attention_mask, 1, temperature=1.0)
    got, _ = completion_logprobs(model, input_ids, attention_mask, 1, temperature=1.0, chunk_size=0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("packing", [True, False])
def test_gradient_checkpointing(tokenizer, monkeypatch, packing):
    """The packed forward needs no KV cache, so it works under activation checkpointing; without packing, HF turns the
    KV cache off under checkpointing, so the shared-prompt path must not be used there: the plain forward is."""
    from train import logprobs

    if not packing:
        monkeypatch.setattr(logprobs, "MAX_PACKED_TOKENS", 0)
    model = make_tiny_model(tokenizer)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    input_ids, attention_mask, completion_mask = _group_batch(tokenizer)
    shapes = []
    model.get_decoder().register_forward_pre_hook(lambda m, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    got, _ = completion_logprobs(model, input_ids, attention_mask, 5, temperature=1.0, chunk_size=0)
    assert shapes == ([(1, _packed_length(attention_mask, 5))] if packing else [(6, input_ids.shape[1])])
    torch.testing.assert_close(got, naive_logprobs(model, input_ids, attention_mask, 5, temperature=1.0), atol=1e-5, rtol=1e-5)
    (got * completion_mask).sum().backward()  # recomputation under checkpointing sees the same block mask
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_chunk_tokens_caps_the_logits_of_a_chunk(monkeypatch):
    assert logprobs_module.chunk_tokens(1024, 263, 5000) == 1024  # small vocabulary: the configured chunk
    assert logprobs_module.chunk_tokens(1024, 151_936, 5000) == 2**25 // 151_936 == 220  # Qwen: 220 x V <= 2**25
    assert logprobs_module.chunk_tokens(0, 151_936, 5000) == 5000  # 0 = one chunk, as configured
    assert logprobs_module.chunk_tokens(1024, 2**26, 5000) == 1  # never zero


def test_vocabulary_cap_keeps_values_and_gradients(tokenizer, monkeypatch):
    """A cap that forces 1-token chunks (V = 263 > 300 // 263 = 1) changes nothing but the chunking."""
    model = make_tiny_model(tokenizer)
    input_ids, attention_mask = _batch(tokenizer)
    naive_logprobs(model, input_ids, attention_mask, 4, 0.7).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    monkeypatch.setattr(logprobs_module, "MAX_CHUNK_LOGITS", 300)
    got, _ = completion_logprobs(model, input_ids, attention_mask, 4, temperature=0.7, chunk_size=1024)
    torch.testing.assert_close(got, naive_logprobs(model, input_ids, attention_mask, 4, 0.7), atol=1e-5, rtol=1e-5)
    got.sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)
