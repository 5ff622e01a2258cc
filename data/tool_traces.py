"""Tool-use traces for the SFT cold start of tool-integrated reasoning (issue 25; sft.traces: tool): an arithmetic
question answered by running Python, written exactly as a tool rollout produces it.

    <think> ```python
    print(4821 * 9377)
    ```
    ```output
    45206517
    ```
     </think> <answer>45206517</answer>

The call and the response use the run's protocol (data/tool_protocol.py: rollout.tools' markers, or the markdown
preset when tools are off, so that the no-tool ablation trains on the very same text, the output block as ordinary
text it has to imagine). The output is what the sandbox prints (`str` of the exact integer result; a test runs the
code to check). The SFT stage masks the response out of the labels when rollout.tools is set
(data/sft_examples.py).

The teacher is imperfect on purpose (`tool_slip`): with that probability it answers in its head instead, and its
head is wrong: an estimate that gets the product's leading digit right and guesses the rest
(``<think> 482*937=407915 </think> <answer>407915</answer>``; the product is 451634). The SFT model then mostly
guesses (greedy decoding takes the majority branch), while sampling calls the tool now and then; those completions get
the reward, and GRPO can make the call the default, as the quickstart's GRPO makes carrying the default.

Why this guess (each measured on the seed that failed, benchmarks/results_tool_learning.md):
- the product with one digit changed (a first version): the SFT model learned to estimate the product's leading
  digits from the operands, and that estimate overrode the copy of the tool's output into the answer (the second
  digit came out wrong in every sampled answer, so no answer was ever right and GRPO had nothing to learn from);
- a uniform guess: nothing in the mental answer depends on the operands, and the tiny model never learned to copy
  them into the call (per-token loss on the call's operand digits 2.25 nats after 600 SFT steps, chance is 2.3;
  1.36 with the first version, 1.56 with this one), so its calls computed the wrong product;
- the leading digit right, the rest uniform: the operands matter for one digit, enough to make the model read them,
  and the rest of the answer has nothing to estimate that could override the copy.
"""

from __future__ import annotations

import random

from data.tool_protocol import ToolProtocol
from data.traces import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, _ARITHMETIC_RE

_PYTHON_OPS = {"+": "+", "-": "-", "*": "*", "/": "//"}  # the synthetic generator's "/" is exact integer division


def _guess(answer: str, rng: random.Random) -> str:
    """A wrong answer with as many digits as `answer` (and its sign) and its leading digit, the other digits uniform:
    the teacher's mental estimate."""
    sign = "-" if answer.startswith("-") else ""
    digits = answer[len(sign):]
    if len(digits) == 1:  # nothing to keep: any other digit
        return sign + rng.choice([d for d in "0123456789" if d != digits])
    while True:
        guess = sign + digits[0] + "".join(rng.choice("0123456789") for _ in digits[1:])
        if guess != answer:
            return guess


def tool_arithmetic_trace(question: str, answer: str, *, protocol: ToolProtocol, rng: random.Random,
                          tool_slip: float = 0.0) -> str:
    """The trace of `question` ("What is A op B?", data/synthetic.py's arithmetic) as the module docstring shows."""
    match = _ARITHMETIC_RE.match(question.strip())
    if match is None:
        raise ValueError(f"not a synthetic arithmetic question: {question!r}")
    a, op, b = match.groups()
    if rng.random() < tool_slip:
        guess = _guess(answer.strip(), rng)
        return f"{THINK_OPEN} {a}{op}{b}={guess} {THINK_CLOSE} {ANSWER_OPEN}{guess}{ANSWER_CLOSE}"
    x, y = int(a), int(b)
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x // y if y else 0}[op]
    call = f"{protocol.call_start}print({a} {_PYTHON_OPS[op]} {b})\n{protocol.call_end}"
    return (f"{THINK_OPEN} {call}{protocol.response_text(str(value))} {THINK_CLOSE} "
            f"{ANSWER_OPEN}{value}{ANSWER_CLOSE}")


def add_tool_traces(rows: list[dict], *, protocol: ToolProtocol, tool_slip: float = 0.0, seed: int = 0) -> list[dict]:
    """Synthetic arithmetic rows with a tool trace each as `completion` (slips drawn from random.Random(seed))."""
    if not 0.0 <= tool_slip <= 1.0:
        raise ValueError(f"tool_slip must be in [0, 1], got {tool_slip}")
    rng = random.Random(seed)
    return [{**row, "completion": tool_arithmetic_trace(row["prompt"], str(row["answer"]), protocol=protocol, rng=rng,
                                                        tool_slip=tool_slip)} for row in rows]


def load_tool_trace_rows(source: str, *, protocol: ToolProtocol, tool_slip: float = 0.0, seed: int = 0,
                         limit: int | None = None) -> list[dict]:
    """SFT rows ``{prompt, answer, completion}`` of a ``synthetic:arithmetic?...`` source with tool traces (the
    sft.traces: tool counterpart of data/traces.py::load_sft_rows)."""
    from data.sources import load_prompt_dataset

    if not source.startswith("synthetic:arithmetic"):
        raise ValueError(f"tool traces are written for synthetic:arithmetic sources, not {source!r}")
    rows = load_prompt_dataset(source, keep_columns=[], limit=limit).to_list()
    return add_tool_traces(rows, protocol=protocol, tool_slip=tool_slip, seed=seed)
