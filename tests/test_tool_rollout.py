"""Multi-turn rollouts with the Python tool (train/tool_rollout.py): calls pause rows, run in the real sandbox, and
come back as context tokens the loss never trains on. Scripted tiny models write the calls: a position script forces
a given program (greedy or sampled alike), and a marker hook makes single-byte markers likely at data-dependent steps
so that sampling reaches them."""

import random
import time

import pytest
import torch

from data.tool_protocol import ToolProtocol
from rewards.code_exec import sandbox_problem
from train import rollout, tools
from train.batch import RolloutBatch
from train.loss import GRPOLoss
from train.rollout import SamplingParams, generate_rollouts
from train.tools import ToolSettings

from helpers import encode_prompts, make_tiny_model

pytestmark = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no working bubblewrap: {sandbox_problem()}")

MARKDOWN = ToolProtocol.preset("markdown")
CALL = "```python\nprint(6*7)\n```"


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _scripted_model(tokenizer, prompt_length: int, script: list[int]):
    """A tiny model that writes script[i] as completion token i (then EOS), whatever came before: the position of
    each step's last token says which completion index comes next (prompts of one length: positions skip padding)."""
    model = make_tiny_model(tokenizer)
    seen = {}
    model.model.register_forward_pre_hook(lambda module, args, kwargs: seen.update(positions=kwargs["position_ids"]),
                                          with_kwargs=True)

    def force(module, args, logits):
        index = seen["positions"][:, -1] + 1 - prompt_length  # [rows] completion index of the next token
        wanted = torch.tensor([script[i] if 0 <= i < len(script) else tokenizer.eos_token_id for i in index.tolist()])
        logits = logits.clone()
        logits[:, -1] = -1e4
        logits[torch.arange(len(wanted)), -1, wanted] = 1e4
        return logits

    model.get_output_embeddings().register_forward_hook(force)
    return model


def _run(model, tokenizer, prompts, *, settings, length, num_generations=2, seed=0, do_sample=True):
    torch.manual_seed(seed)
    return generate_rollouts(model, tokenizer, encode_prompts(tokenizer, prompts), num_generations=num_generations,
                             sampling=SamplingParams(length, 1.0, 1.0, 0, tools=settings), device=torch.device("cpu"),
                             do_sample=do_sample)


def test_a_call_runs_and_its_output_is_context_not_model_tokens(tokenizer):
    prompt = "Multiply 6 by 7."
    call, response = _ids(tokenizer, CALL), MARKDOWN.response_ids(tokenizer, "42")
    model = _scripted_model(tokenizer, len(encode_prompts(tokenizer, [prompt])[0]), call)
    batch = _run(model, tokenizer, [prompt], settings=ToolSettings(MARKDOWN), length=64)
    for row in range(2):
        assert batch.completion_texts[row] == CALL + MARKDOWN.response_text("42")
        n = len(call) + len(response) + 1  # the call, the tool's answer, then the model's EOS
        assert batch.completion_mask[row].tolist() == [1] * n + [0] * (batch.completion_mask.shape[1] - n)
        assert batch.model_token_mask[row, :n].tolist() == [1] * len(call) + [0] * len(response) + [1]
        assert batch.completion_ids[row, len(call) : len(call) + len(response)].tolist() == response
        assert [(c["code"], c["output"], c["status"]) for c in batch.tool_calls[row]] == [("print(6*7)\n", "42", "ok")]
    assert not batch.truncated.any()
    assert torch.equal(batch.loss_token_mask, batch.completion_mask * batch.model_token_mask)


def test_calls_beyond_the_limit_stay_text_and_the_budget_cuts_the_response(tokenizer):
    prompt = "Multiply 6 by 7."
    call, response = _ids(tokenizer, CALL), MARKDOWN.response_ids(tokenizer, "42")
    filler = [tokenizer.eos_token_id] * len(response)  # positions the tool's answer takes (never drawn)
    model = _scripted_model(tokenizer, len(encode_prompts(tokenizer, [prompt])[0]), call + filler + call + filler + call)
    batch = _run(model, tokenizer, [prompt], settings=ToolSettings(MARKDOWN, max_tool_calling_iterations=2), length=200)
    assert [len(calls) for calls in batch.tool_calls] == [2, 2]
    assert batch.completion_texts[0] == (CALL + MARKDOWN.response_text("42")) * 2 + CALL  # the third call is text
    assert int((batch.model_token_mask[0] == 0).logical_and(batch.completion_mask[0] == 1).sum()) == 2 * len(response)
    cut = _run(model, tokenizer, [prompt], settings=ToolSettings(MARKDOWN), length=len(call) + 3)
    assert cut.truncated.all() and cut.completion_mask.sum(1).tolist() == [len(call) + 3] * 2
    assert cut.model_token_mask[0].tolist() == [1] * len(call) + [0] * 3


def test_a_hanging_call_costs_its_time_limit_only(tokenizer):
    prompt = "Loop."
    call = _ids(tokenizer, "```python\nwhile True: pass\n```")
    model = _scripted_model(tokenizer, len(encode_prompts(tokenizer, [prompt])[0]), call)
    start = time.perf_counter()
    batch = _run(model, tokenizer, [prompt], settings=ToolSettings(MARKDOWN, time_limit_s=1.0), length=120)
    assert time.perf_counter() - start < 1.0 + 4.0  # the 2 rows write the same cell: it runs once
    assert [c["status"] for c in batch.tool_calls[0]] == ["timeout"]
    assert "TimeoutError" in batch.completion_texts[0]


# Single-byte markers a random byte-level model reaches while sampling: bodies are random bytes, so the calls are
# mostly SyntaxErrors, whose text is deterministic.
BRACES = ToolProtocol("{", "}", "[{output}]", max_tool_response_length=16)
PROMPTS = ["What is 12+30? <think>", "Hi", "A longer prompt, with more words <think>"]


def _brace_model(tokenizer):
    model = make_tiny_model(tokenizer)
    opening, closing = _ids(tokenizer, "{")[0], _ids(tokenizer, "}")[0]

    def boost(module, args, logits):
        best = logits.max(dim=-1)
        logits = logits.clone()
        logits[..., opening] = torch.where(best.indices % 5 == 0, best.values + 4.0, logits[..., opening])
        logits[..., closing] = torch.where(best.indices % 5 == 1, best.values + 4.0, logits[..., closing])
        return logits

    model.get_output_embeddings().register_forward_hook(boost)
    return model


def _assert_same(a: RolloutBatch, b: RolloutBatch):
    for name in ("input_ids", "attention_mask", "completion_mask", "model_token_mask", "truncated"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.completion_texts == b.completion_texts
    strip = lambda calls: [[{k: v for k, v in c.items() if k != "seconds"} for c in row] for row in calls]  # noqa: E731
    assert strip(a.tool_calls) == strip(b.tool_calls)


def test_lean_sampler_equals_hf_generate_with_tools(tokenizer, monkeypatch):
    """Sampled, with calls at data-dependent steps in rows of three prompt lengths: every round, stop and draw of the
    lean sampler is `generate`'s (lock-step ZeRO-3 decoding goes through `generate`)."""
    model = _brace_model(tokenizer)
    settings = ToolSettings(BRACES, max_tool_calling_iterations=2)
    lean = _run(model, tokenizer, PROMPTS, settings=settings, length=80, num_generations=3, seed=3)
    assert sum(len(calls) for calls in lean.tool_calls) >= 6 and max(len(calls) for calls in lean.tool_calls) == 2
    assert ((lean.model_token_mask == 0) & (lean.completion_mask == 1)).any()
    monkeypatch.setattr(rollout, "_uses_hf_generate", lambda *args: True)
    hf = _run(model, tokenizer, PROMPTS, settings=settings, length=80, num_generations=3, seed=3)
    _assert_same(lean, hf)


def test_greedy_tool_rollout_through_hf_generate(tokenizer, monkeypatch):
    prompt = "Multiply 6 by 7."
    call, response = _ids(tokenizer, CALL), MARKDOWN.response_ids(tokenizer, "42")
    model = _scripted_model(tokenizer, len(encode_prompts(tokenizer, [prompt])[0]), call + [0] * len(response) + call)
    lean = _run(model, tokenizer, [prompt], settings=ToolSettings(MARKDOWN), length=100, do_sample=False)
    monkeypatch.setattr(rollout, "_uses_hf_generate", lambda *args: True)
    hf = _run(model, tokenizer, [prompt], settings=ToolSettings(MARKDOWN), length=100, do_sample=False)
    _assert_same(lean, hf)
    assert [len(calls) for calls in hf.tool_calls] == [2, 2]


def test_tokens_do_not_depend_on_how_long_tools_take(tokenizer, monkeypatch):
    model = _brace_model(tokenizer)
    settings = ToolSettings(BRACES, max_tool_calling_iterations=2, num_workers=3)
    prompt_run = lambda: _run(model, tokenizer, PROMPTS, settings=settings, length=60, num_generations=3, seed=5)  # noqa: E731
    reference = prompt_run()
    real, delays = tools.run_cells, random.Random(0)

    def slow(*args, **kwargs):
        time.sleep(delays.uniform(0, 0.3))
        return real(*args, **kwargs)

    monkeypatch.setattr(tools, "run_cells", slow)
    _assert_same(reference, prompt_run())


def test_tool_tokens_carry_no_gradient_and_are_not_counted():
    """Hand-worked: row 0 has model tokens [1,1,0,0,1,1] (two tool tokens) and advantage +1, row 1 [1,1,1,0,0,0]
    (three tokens then padding) and -1; on-policy, so every ratio is 1 and d(loss)/d(logp) = -A / 7 on model
    tokens (dapo: 7 model tokens, not 9) and exactly 0 on tool tokens."""
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    model_token_mask = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0]])
    batch = RolloutBatch(input_ids=torch.zeros(2, 8, dtype=torch.long), attention_mask=torch.ones(2, 8),
                         completion_mask=completion_mask, prompt_length=2, group_size=2, completion_texts=["", ""],
                         truncated=torch.tensor([True, False]), model_token_mask=model_token_mask)
    mask = batch.loss_token_mask.float()
    logprobs = torch.full((2, 6), -1.0, requires_grad=True)
    loss = GRPOLoss(loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.2, max_completion_length=6,
                    importance_sampling_level="token", use_bias_correction_kl=False)
    value, _ = loss(logprobs, logprobs.detach(), None, torch.tensor([1.0, -1.0]), mask, step_tokens=float(mask.sum()),
                    num_sequences=2.0)
    value.backward()
    assert value.item() == pytest.approx(-1 / 7)
    expected = torch.tensor([[-1, -1, 0, 0, -1, -1], [1, 1, 1, 0, 0, 0]]) / 7
    torch.testing.assert_close(logprobs.grad, expected)


def test_the_update_sees_model_tokens_of_kept_rows_only(tokenizer, dist_single):
    """The trainer's batch (TrainBatch.from_rollout, as train/main.py builds it) masks tool output and left-out rows:
    the normalisers count 7 model tokens in 2 kept rows, and the update's entropy is the mean over those 7 tokens of
    the model's own per-token entropy, not over the tool tokens or the left-out row."""
    from helpers import build_engine, grpo_loss
    from train.batch import TrainBatch
    from train.logprobs import completion_logprobs
    from train.micro_batches import MicroBatching
    from train.update import policy_update, step_normalisers

    gen = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, 256, (3, 2 + 6), generator=gen)
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    model_token_mask = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    attention_mask = torch.cat([torch.ones(3, 2, dtype=torch.long), completion_mask], 1)
    rollout = RolloutBatch(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask,
                           prompt_length=2, group_size=3, completion_texts=["", "", ""],
                           truncated=torch.tensor([True, False, False]), model_token_mask=model_token_mask)
    batch = TrainBatch.from_rollout(rollout, torch.tensor([True, True, False]), torch.tensor([1.0, -1.0, 0.0]))
    expected_mask = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]]).float()
    torch.testing.assert_close(batch.completion_mask, expected_mask)
    assert step_normalisers(batch.completion_mask) == (7.0, 2.0)

    model = make_tiny_model(tokenizer, seed=1)
    # A random tiny model's entropy is ~ln V everywhere; sharpening the rows whose argmax is even makes it vary by
    # position, so a mean over the wrong tokens shows (a function of each row's logits: any forward layout agrees).
    model.get_output_embeddings().register_forward_hook(
        lambda module, args, logits: logits * torch.where(logits.argmax(-1, keepdim=True) % 2 == 0, 30.0, 1.0))
    engine = build_engine(model, micro_batch_size=3, total_steps=1)
    with torch.no_grad():
        _, entropy = completion_logprobs(engine.hf_module, input_ids, attention_mask, 6, temperature=1.0, chunk_size=0)
    update = policy_update(engine, batch, loss=grpo_loss(), micro_batching=MicroBatching(3), temperature=1.0,
                           logprob_chunk_size=0)
    assert update["entropy"] == pytest.approx(((entropy * expected_mask).sum() / 7).item(), rel=1e-5)
    all_completion_tokens = (entropy * completion_mask).sum() / completion_mask.sum()
    assert abs(update["entropy"] - all_completion_tokens.item()) > 0.05
    engine.destroy()


def test_rewards_and_evaluation_read_the_calls(tokenizer):
    """A reward can read the tool's results: tool_errors penalises a failed call, in held-out evaluation as in
    training (the tool_calls column), while the accuracy reward reads the answer."""
    from rewards import RewardCombiner, RewardSpec
    from train.evaluate import evaluate

    prompt = "Divide 1 by 0."
    call = "```python\n1/0\n```"
    ids = encode_prompts(tokenizer, [prompt])
    model = _scripted_model(tokenizer, len(ids[0]), _ids(tokenizer, call))
    specs = [RewardSpec("arithmetic_accuracy", 1.0), RewardSpec("tool_errors", 0.5)]
    with RewardCombiner(specs) as combiner:  # both rewards are inline: no worker starts
        result = evaluate(model, tokenizer, ids, [prompt], {"answer": ["0"]}, combiner, accuracy_reward="arithmetic_accuracy",
                          k=1, sampling=SamplingParams(200, 1.0, 1.0, 0, tools=ToolSettings(MARKDOWN)), batch_size=1,
                          device="cpu")
    assert result.metrics["eval/rewards/tool_errors"] == -1.0
    assert "ZeroDivisionError" in result.samples[0]["completion"]
    assert result.samples[0]["tool_calls"][0]["status"] == "error"  # held-out samples show the calls, as training's do


def test_tool_errors_needs_tool_rollouts(tmp_path):
    from train.config import ConfigError, load_config

    from helpers import SMOKE

    rewards = "rewards.functions=[{name: arithmetic_accuracy}, {name: tool_errors, weight: 0.1}]"
    with pytest.raises(ConfigError, match="tool_errors reads the calls of tool rollouts; set rollout.tools"):
        load_config(SMOKE, [rewards])
    assert load_config(SMOKE, [rewards, "rollout.tools={}"]).rollout.tools.format == "markdown"
