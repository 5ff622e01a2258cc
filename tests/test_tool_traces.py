"""Tool-use traces for SFT (data/tool_traces.py) and their labels: the tool's responses are context, never targets."""

import random

import pytest

from data.sft_examples import IGNORE_INDEX, tokenize_example
from data.tool_protocol import ToolProtocol
from data.tool_traces import add_tool_traces, load_tool_trace_rows, tool_arithmetic_trace
from rewards.code_exec import sandbox_problem
from rewards.python_tool import run_cells

MARKDOWN = ToolProtocol.preset("markdown")
SOURCE = "synthetic:arithmetic?n=400&seed=2&min_digits=4&max_digits=4&ops=mul"


def test_a_tool_trace_is_what_a_tool_rollout_writes():
    trace = tool_arithmetic_trace("What is 4821 * 9377?", "45206517", protocol=MARKDOWN, rng=random.Random(0))
    assert trace == ("<think> ```python\nprint(4821 * 9377)\n```\n```output\n45206517\n```\n </think> "
                     "<answer>45206517</answer>")
    assert MARKDOWN.find_call(trace) == "print(4821 * 9377)\n"


def test_the_imperfect_teacher_slips_at_its_rate_with_a_wrong_guess():
    rows = load_tool_trace_rows(SOURCE, protocol=MARKDOWN, tool_slip=0.6, seed=0)
    slips = [row for row in rows if "```python" not in row["completion"]]
    assert 0.5 < len(slips) / len(rows) < 0.7
    guesses = [row["completion"].split("<answer>")[1].split("</answer>")[0] for row in slips]
    assert all(len(g) == len(row["answer"]) and g != row["answer"] for g, row in zip(guesses, slips))
    # An estimate: the leading digit is the product's, the others are uniform (the second agrees about 1 in 10 times,
    # not almost always as a near-miss product's would).
    assert all(g[0] == row["answer"][0] for g, row in zip(guesses, slips))
    assert sum(g[1] == row["answer"][1] for g, row in zip(guesses, slips)) / len(slips) < 0.25
    assert add_tool_traces(rows[:5], protocol=MARKDOWN, tool_slip=0.6, seed=0) == \
        add_tool_traces(rows[:5], protocol=MARKDOWN, tool_slip=0.6, seed=0)  # seeded


@pytest.mark.skipif(sandbox_problem() is not None, reason="no working bubblewrap")
def test_the_traces_outputs_are_what_the_sandbox_prints():
    for row in load_tool_trace_rows(SOURCE, protocol=MARKDOWN, limit=8):
        code = MARKDOWN.find_call(row["completion"])
        assert MARKDOWN.response_text(run_cells([code]).output.rstrip()) in row["completion"]


def test_sft_labels_mask_the_tool_response(tokenizer):
    trace = tool_arithmetic_trace("What is 12 * 34?", "408", protocol=MARKDOWN, rng=random.Random(0))
    template = dict(template="r1_zero", system_prompt="Multiply.", prefill_think=True)
    masked = tokenize_example("What is 12 * 34?", trace, tokenizer, **template, tool_protocol=MARKDOWN)
    plain = tokenize_example("What is 12 * 34?", trace, tokenizer, **template)
    assert masked.input_ids == plain.input_ids  # the same tokens (byte-level), only the labels differ
    response = MARKDOWN.response_ids(tokenizer, "408")
    ignored = [i for i, label in enumerate(masked.labels) if label == IGNORE_INDEX]
    prompt_length = plain.labels.count(IGNORE_INDEX)
    tool_positions = ignored[prompt_length:]
    assert len(tool_positions) == len(response)
    assert [masked.input_ids[i] for i in tool_positions] == response
    assert tokenizer.decode([masked.input_ids[i] for i in tool_positions]) == "\n```output\n408\n```\n"
    assert masked.labels[-1] == tokenizer.eos_token_id
