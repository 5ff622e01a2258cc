"""Reward preflight, the checks themselves: can the rewards fire at all on this data, and does the initial policy
come anywhere near them? (issue 13, point 3)

"The reward is stuck at 0" is the most frequent complaint about GRPO tools, and most often no amount of training
could have helped: the gold answers sit in another column, are in a form the accuracy reward cannot read, or the
format reward wants tags the template never produces. Two checks show that before the first step:

* Gold check (:func:`gold_report`): every row's gold answer, written as a *perfect completion* in the configured
  template (:func:`perfect_completion`), is scored by every reward. The accuracy reward must give it 1; rows that
  score below 1 or that the reward finds unusable (``None``, "not applicable") are counted, and more than
  ``rewards.preflight_max_bad_fraction`` of them stop the run (:func:`gold_failure`). The other rewards' scores of the
  same completion show whether the format rewards can fire with this template.
* Sample check (:func:`sample_report`): a few completions sampled from the initial policy, with each reward's score.

How a perfect completion is written. One form fits every built-in accuracy reward: the reasoning in the think block,
the gold answer in ``<answer>…</answer>``, unboxed:

* ``arithmetic_accuracy`` and ``gsm8k_accuracy`` read the last number inside the answer tag;
* ``countdown`` reads the tag's content as the equation, checked against the ``numbers``/``target`` columns; the
  ``answer`` column of countdown rows holds one solution (data/synthetic.py), so it is the equation to write;
* ``math_accuracy`` reads an unboxed tag's content exactly as it reads the gold label (``read_answer``), so the two
  parse alike. A box would be read differently: inside ``\\boxed{}`` math-verify reads a gold with a word ("17 apples")
  as a product of symbols;
* a GSM8K gold ``reasoning\\n#### 42`` is split: the reasoning goes in the think block, the final number in the tag
  (the gold the reward reads is the column itself, so a reward that cannot read ``####`` still says so);
* ``code_exec`` needs a reference program, and rows carry only tests: a config with ``code_exec`` skips the gold check
  and the report says why (:data:`UNWRITABLE`). Custom ``module:function`` rewards get the same form as the built-ins,
  but it is a guess there: with one as the accuracy reward a failed check warns instead of stopping
  (:data:`VERIFIED_REWARDS`).

Whether the completion opens ``<think>`` itself depends on the rendered prompt: when it ends with ``<think>``
(``data.prefill_think``, or a chat template that prefills it) the completion continues inside the think block, as a
sampled one would. Plain values in, plain values out: train/builders.py reads the config and calls these for the
trainer, train/preflight.py for the command.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from rewards.combine import is_correct
from rewards.extract import opens_answer
from train.rollout import SamplingParams, generate_rollouts

THINK_OPEN = "<think>"
REASONING_PLACEHOLDER = "reasoning"  # the think block of a gold that carries no reasoning of its own
UNWRITABLE = {
    "code_exec": "code_exec is configured: its perfect completion is a reference program, and the rows carry only "
                 "tests; gold check skipped",
}
# Rewards whose perfect completion is known to score 1 (the list above; tests/test_preflight.py checks each template):
# when the gold check of one of them fails, the data or the reward choice is at fault and the run stops. For any other
# accuracy reward (a custom `module:function`, a length or step-count reward) the completion's form is a guess, so a
# failed check is only reported, as a warning.
VERIFIED_REWARDS = frozenset({"math_accuracy", "gsm8k_accuracy", "arithmetic_accuracy", "countdown", "format_strict",
                              "format_lenient", "tag_count"})
SAMPLE_PROMPTS, SAMPLE_GENERATIONS = 2, 2  # the sample check: 2 prompts x 2 completions
SAMPLE_MAX_TOKENS = 256  # ... of at most this many tokens (or rollout.max_completion_length if shorter)


def split_gold(answer: object) -> tuple[str, str]:
    """(reasoning, final answer) of a gold label: GSM8K's ``"…\\n#### 42"`` splits at the last ``####``.

    >>> split_gold("48/2 = 24 clips.\\n#### 72"), split_gold(" 17 ")
    (('48/2 = 24 clips.', '72'), ('', '17'))
    """
    text = "" if answer is None else str(answer)
    if "####" in text:
        reasoning, final = text.rsplit("####", 1)
        return reasoning.strip(), final.strip()
    return "", text.strip()


def perfect_completion(answer: object, *, template: str, prefill_think: bool, prefill_answer: bool = False) -> str:
    """The completion a perfect policy would write for gold `answer` (see the module docstring).

    prefill_answer: the rendered prompt ends with an opened ``<answer>``, so the completion is the final answer and
    the closing tag.

    prefill_think: the rendered prompt ends with an opened ``<think>``, so the completion starts inside it. The
    separators follow the template: spaces for ``r1_zero`` (its instruction writes ``<think> … </think> <answer> …
    </answer>``), newlines otherwise (``chat`` prompts already end with ``"<think>\\n"``).

    >>> perfect_completion("4", template="r1_zero", prefill_think=True)
    ' reasoning </think> <answer>4</answer>'
    >>> perfect_completion("4", template="r1_zero", prefill_think=False)
    '<think> reasoning </think> <answer>4</answer>'
    """
    reasoning, final = split_gold(answer)
    if prefill_answer:
        return f"{final}</answer>"
    sep = " " if template == "r1_zero" else "\n"
    body = f"{reasoning or REASONING_PLACEHOLDER}{sep}</think>{sep}<answer>{final}</answer>"
    if not prefill_think:
        return f"{THINK_OPEN}{sep}{body}"
    return body if template == "chat" else sep + body


def shorten(text: object, limit: int = 120, *, tail: bool = False) -> str:
    """The repr of `text` (one line, quoted) cut to `limit` characters; its end is kept when `tail` (a prompt's end is
    what tells templates apart).

    >>> shorten("What is 2 + 2?\\nThink.", 8), shorten("Assistant: <think>", 7, tail=True)
    ("'What is …'", "'…<think>'")
    """
    s = str(text)
    if len(s) > limit:
        s = "…" + s[-limit:] if tail else s[:limit] + "…"
    return repr(s)


@dataclass
class GoldReport:
    """The gold check of one split. Counts are over the rows checked (this rank's shard until `with_counts`)."""

    split: str  # "training" or "eval"
    accuracy_reward: str
    num_rows: int
    correct: int  # the accuracy reward gave >= 1
    below_one: int  # it applied and gave < 1 (a failed call scores `on_error`)
    not_applicable: int  # it returned None: it cannot use the row's gold
    examples: dict[str, list[dict]]  # "below_one" / "not_applicable" -> up to a few {row, answer, completion, score}
    example: dict | None  # the first row: {row, prompt, completion, scores: {reward: score}} for every reward
    reward_means: dict[str, float]  # every reward's mean over the rows it applied to (NaN: none)
    failures: dict[str, int]  # reward -> calls that raised or timed out
    skipped: str | None = None  # why the check did not run (UNWRITABLE), else None

    @property
    def bad(self) -> int:
        return self.below_one + self.not_applicable

    def counts(self) -> list[int]:
        """[num_rows, correct, below_one, not_applicable]: what sums over the shards of a split."""
        return [self.num_rows, self.correct, self.below_one, self.not_applicable]

    def with_counts(self, counts: list) -> GoldReport:
        """This report with `counts()` replaced, e.g. by their sum over ranks (the examples stay this rank's)."""
        num_rows, correct, below_one, not_applicable = (int(c) for c in counts)
        return dataclasses.replace(self, num_rows=num_rows, correct=correct, below_one=below_one, not_applicable=not_applicable)


def gold_report(split: str, rows: dict[str, list], combiner, accuracy_reward: str, *, template: str,
                count_tokens=None, num_examples: int = 3) -> GoldReport:
    """Score every row's gold answer, written as a perfect completion, with every reward of `combiner`.

    rows: dataset columns, each a list of B values: `text` (the rendered prompt), `answer`, and the rest handed to the
        rewards as in training (`prompt_ids`, if present, is ignored).
    count_tokens: texts -> token counts (with EOS), the `completion_length` column length rewards read; None: omitted.
    """
    names = [spec.name for spec in combiner.specs]
    empty = GoldReport(split, accuracy_reward, 0, 0, 0, 0, {"below_one": [], "not_applicable": []}, None, {}, {})
    unwritable = [name for name in names if name in UNWRITABLE]
    if unwritable:
        return dataclasses.replace(empty, skipped=UNWRITABLE[unwritable[0]])
    prompts, answers = rows["text"], rows["answer"]
    if not prompts:
        return empty
    completions = [perfect_completion(a, template=template, prefill_think=p.rstrip().endswith(THINK_OPEN),
                                      prefill_answer=opens_answer(p))
                   for a, p in zip(answers, prompts, strict=True)]
    columns = {name: values for name, values in rows.items() if name not in ("text", "prompt_ids")}
    if count_tokens is not None:
        columns["completion_length"] = list(count_tokens(completions))
    scored = combiner(completions, prompts, columns)
    accuracy, skipped = scored.per_reward[accuracy_reward], scored.skipped[accuracy_reward]
    kinds = ["not_applicable" if n_a else ("correct" if is_correct(score) else "below_one") for score, n_a in zip(accuracy, skipped)]
    examples: dict[str, list[dict]] = {"below_one": [], "not_applicable": []}
    for i, kind in enumerate(kinds):
        if kind != "correct" and len(examples[kind]) < num_examples:
            examples[kind].append({"row": i, "answer": answers[i], "completion": completions[i], "score": accuracy[i]})
    means = {}
    for name in names:
        applied = [v for v in scored.per_reward[name] if not math.isnan(v)]
        means[name] = math.fsum(applied) / len(applied) if applied else math.nan
    example = {"row": 0, "prompt": prompts[0], "completion": completions[0],
               "scores": {name: scored.per_reward[name][0] for name in names}}
    return GoldReport(split, accuracy_reward, len(kinds), kinds.count("correct"), kinds.count("below_one"),
                      kinds.count("not_applicable"), examples, example, means, dict(scored.failures))


def gold_failure(reports: list[GoldReport], max_bad_fraction: float, *, command: str = "python -m train.preflight") -> str | None:
    """The one-line error when a split has more than `max_bad_fraction` of rows that cannot score 1, else None.

    >>> report = GoldReport("training", "arithmetic_accuracy", 200, 198, 1, 1, {}, None, {}, {})  # 2 bad of 200
    >>> gold_failure([report], 0.01) is None, gold_failure([report], 0.005)[:56]
    (True, 'rewards.preflight: 2 of 200 training rows cannot score 1')
    """
    for r in reports:
        if r.skipped is not None or r.num_rows == 0 or r.bad <= max_bad_fraction * r.num_rows:
            continue
        shown = (r.examples.get("not_applicable") or []) + (r.examples.get("below_one") or [])
        example = ""
        if shown:
            e = shown[0]
            verdict = "not applicable" if math.isnan(e["score"]) else f"scores {e['score']:g}"
            example = f"; e.g. {r.split} row {e['row']} (answer {shorten(e['answer'], 60)}): {verdict}"
        return (f"rewards.preflight: {r.bad} of {r.num_rows} {r.split} rows cannot score 1 on {r.accuracy_reward} with "
                f"their own gold answer written as a perfect completion ({r.below_one} score below 1, {r.not_applicable} "
                f"not applicable; rewards.preflight_max_bad_fraction={max_bad_fraction:g}){example}. Check "
                f"data.answer_column and rewards.functions ({command} --config ... prints the full report), or set "
                f"rewards.preflight=false")
    return None


def gold_summary(reports: list[GoldReport]) -> str:
    """The trainer's one-line gold-check summary (rank 0)."""
    parts = []
    for r in reports:
        if r.skipped is not None:
            return f"gold check skipped: {r.skipped}"
        extra = f" ({r.below_one} below 1, {r.not_applicable} not applicable)" if r.bad else ""
        parts.append(f"{r.split} {r.correct}/{r.num_rows}{extra}")
    first = reports[0]
    line = f"gold answers as perfect completions score 1 on {first.accuracy_reward}: {', '.join(parts)}"
    if first.example is not None:
        scores = ", ".join(f"{name} {value:g}" for name, value in first.example["scores"].items())
        line += f" | every reward on {first.split} row 0: {scores}"
    return line


@torch.no_grad()
def sample_report(model, tokenizer, rows: dict[str, list], combiner, *, num_generations: int, sampling: SamplingParams,
                  device, synced_gpus: bool = False) -> list[dict]:
    """Sample `num_generations` completions for each of the b prompts of `rows` (columns as in `gold_report`, plus
    `prompt_ids`) and score them as training does. Returns [B*G] {prompt, completion, truncated, scores: {reward: score}}."""
    rollout = generate_rollouts(model, tokenizer, rows["prompt_ids"], num_generations=num_generations, sampling=sampling,
                                device=device, synced_gpus=synced_gpus)
    prompts = rollout.per_completion(rows["text"])
    columns = {name: rollout.per_completion(values) for name, values in rows.items() if name not in ("text", "prompt_ids")}
    columns["completion_length"] = rollout.completion_lengths.tolist()
    if rollout.tool_calls is not None:
        columns["tool_calls"] = rollout.tool_calls
    scored = combiner(rollout.completion_texts, prompts, columns)
    return [{"prompt": prompts[i], "completion": text, "truncated": bool(rollout.truncated[i]),
             "scores": {name: values[i] for name, values in scored.per_reward.items()}}
            for i, text in enumerate(rollout.completion_texts)]


def sample_summary(samples: list[dict]) -> str:
    """The trainer's one-line sample-check summary: for each reward, in how many samples it was non-zero."""
    n = len(samples)
    truncated = sum(s["truncated"] for s in samples)
    fired = ", ".join(f"{name} {sum(s['scores'][name] != 0 and not math.isnan(s['scores'][name]) for s in samples)}/{n}"
                      for name in samples[0]["scores"]) if samples else ""
    return (f"{n} samples of the initial policy ({truncated} hit the length cap); rewards non-zero in: {fired} | "
            f"e.g. {shorten(samples[0]['completion'], 80)}" if samples else "no samples")
