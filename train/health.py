"""Run health: one plain line when a GRPO run is going wrong, with the likely cause and the option to change.

A run can degrade without failing: held-out accuracy falls, the policy drifts towards long random text, or every group
scores alike so GRPO has nothing to learn from (issue 23: a LoRA run on a new task went 0.160 -> 0.090 held-out while
nothing said so). Each check is a pure function of the metric records logged so far (metrics.jsonl's dicts, step 0
first), fires at the step where its condition starts to hold (not again while it keeps holding; the held-out check at
each evaluation below the start, since evaluations are steps apart), and is tested on
hand-made histories and on runs made to go wrong (tests/test_health.py). The main loop prints each as
`thinkrl: warning: step N: ...` and logs `health/<check>` = 1 at that step, which the report marks on its plots.

Checks (thresholds are module constants, chosen above step-to-step noise of small runs):
- `eval_below_start`: held-out `eval/pass@1` below its step-0 value by more than EVAL_DROP (2 points).
- `entropy_and_truncation_rising`: over the last WINDOW steps against the WINDOW before, the policy's mean token
  entropy rose by more than ENTROPY_RISE (relative) and the share of completions cut at max_completion_length by more
  than TRUNCATION_RISE (absolute). Not while every group of those steps had no reward spread: their gradients were 0
  (at beta 0 exactly), so the policy did not move and the rise is the prompts' (the sweep's color_cube_rotation runs,
  LoRA and full alike, rose 2.59 -> 2.73 and 26% -> 32% at step 13 on a model no step had changed).
- `no_reward_spread`: in each of the last WINDOW steps, at least NO_SPREAD of the groups had no reward spread
  (`zero_std_fraction`): their advantages are all 0, so the step trains on nothing.
- `one_opening_for_all`: in each of the last WINDOW steps, at least ONE_OPENING of the step's completions, over all
  its prompts, opened the same way (`top_opening_share`, train/step_metrics.py): the policy writes one answer
  whatever the question. Prompted by the task sweep (benchmarks/results_task_sweep.md): on letter_counting the
  logged samples of the last steps all answered "1", which is right on 32% of held-out prompts, and held-out pass@1
  went 0.000 -> 0.350, about what that one answer gets. Tested on hand-made histories; in the sweep's gcd run it
  fired at step 21 (97% of completions alike; held-out 0.330, always "2" gets 0.345). Room to reason does not
  escape it: with data.prefill_answer=false the model's explanations start at 0.095 on gcd, below always "2", and
  with cut completions no longer paid the policy went back to bare answers and to 0.330.
The hints of the last two read whether the run already samples dynamically (`filter_groups/rounds` in its records):
dynamic sampling is what kept gcd learning past the fixed answer, so only a run without it is told to turn it on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean

WINDOW = 3
EVAL_DROP = 0.02
ENTROPY_RISE = 0.05
TRUNCATION_RISE = 0.05
NO_SPREAD = 0.9
ONE_OPENING = 0.8


@dataclass(frozen=True)
class HealthWarning:
    check: str  # logged as health/<check>
    message: str  # one line: what is happening, the likely cause, the option to change


def _values(records: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every record holding a finite `key`, in order."""
    return [(r["step"], float(r[key])) for r in records
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r]


def _dynamic_sampling_rounds(records: list[dict]) -> float | None:
    """Rounds of prompts the last step drew under rollout.filter_groups; None when the run does not use it."""
    rounds = _values(records, "filter_groups/rounds")
    return rounds[-1][1] if rounds else None


def eval_below_start(records: list[dict]) -> HealthWarning | None:
    evals = _values(records, "eval/pass@1")
    if len(evals) < 2 or evals[0][0] != 0 or records[-1].get("step") != evals[-1][0]:
        return None  # no step-0 baseline, or no evaluation at this step
    start, now = evals[0][1], evals[-1][1]
    if now >= start - EVAL_DROP:
        return None
    return HealthWarning("eval_below_start", (
        f"held-out pass@1 {now:.3f} is below its step-0 value {start:.3f}: training is making the policy worse on "
        "prompts it does not train on. Likely cause: a learning rate too high for this model (lower optim.lr; under "
        "LoRA the update also scales with model.lora.alpha / r) or rewards that pay for something besides correct "
        "answers (check rewards.functions and the samples: a cut completion scored by its last number teaches the "
        "policy to ramble to the cap; add the overlong_penalty reward); grpo.beta > 0 keeps the policy near its "
        "start."))


def entropy_and_truncation_rising(records: list[dict]) -> HealthWarning | None:
    train = [r for r in records if "entropy" in r and "truncated_fraction" in r]
    if len(train) < 2 * WINDOW or train[-1] is not records[-1]:
        return None
    before, recent = train[-2 * WINDOW : -WINDOW], train[-WINDOW:]
    if all(r.get("zero_std_fraction", 0.0) >= 1.0 for r in before + recent):
        return None  # nothing trained: the same policy sampled other prompts
    entropy = fmean(r["entropy"] for r in before), fmean(r["entropy"] for r in recent)
    truncated = fmean(r["truncated_fraction"] for r in before), fmean(r["truncated_fraction"] for r in recent)
    if not (entropy[1] > entropy[0] * (1 + ENTROPY_RISE) and truncated[1] > truncated[0] + TRUNCATION_RISE):
        return None
    return HealthWarning("entropy_and_truncation_rising", (
        f"entropy {entropy[0]:.2f} -> {entropy[1]:.2f} and completions cut at max_completion_length "
        f"{truncated[0]:.0%} -> {truncated[1]:.0%} have risen together over {WINDOW} steps: the policy is drifting "
        "towards long, random text. Likely cause: updates too large for this model (lower optim.lr, or set grpo.beta "
        "> 0), or cut completions being rewarded (score them with the overlong_penalty reward, or raise "
        "rollout.max_completion_length)."))


def no_reward_spread(records: list[dict]) -> HealthWarning | None:
    train = [r for r in records if "zero_std_fraction" in r]
    if len(train) < WINDOW or train[-1] is not records[-1]:
        return None
    recent = [r["zero_std_fraction"] for r in train[-WINDOW:]]
    if min(recent) < NO_SPREAD:
        return None
    rounds = _dynamic_sampling_rounds(records)
    remedy = ("use rollout.filter_groups.enable=true, " if rounds is None else
              f"dynamic sampling is on and {rounds:.0f} rounds of prompts found too few groups with spread: raise "
              "rollout.filter_groups.max_num_gen_batches, or use ")
    return HealthWarning("no_reward_spread", (
        f"{fmean(recent):.0%} of the groups had no reward spread in each of the last {WINDOW} steps: every completion "
        "of a group scored the same, so their advantages are 0 and the steps trained on almost nothing. Likely cause: "
        "the task is too hard (or too easy) for the model, or the reward never pays (check samples.jsonl); "
        f"{remedy}a larger rollout.num_generations, an SFT stage (sft:), or easier prompts."))


def one_opening_for_all(records: list[dict]) -> HealthWarning | None:
    train = [r for r in records if "top_opening_share" in r]
    if len(train) < WINDOW or train[-1] is not records[-1]:
        return None
    recent = [r["top_opening_share"] for r in train[-WINDOW:]]
    if not min(recent) >= ONE_OPENING:
        return None
    return HealthWarning("one_opening_for_all", (
        f"{fmean(recent):.0%} of the completions of each of the last {WINDOW} steps, over all their prompts, open the "
        "same way (see samples.jsonl): the policy gives one answer whatever the question, and held-out gains are "
        "only the share of prompts that answer fits. Likely cause: the model's own answers are right less often "
        "than one fixed answer, so the fixed answer is what GRPO finds (compare held-out pass@1 with always the "
        "commonest answer); once every group agrees, more steps teach nothing. "
        + ("Try rollout.filter_groups.enable=true (it kept gcd learning past the fixed answer), "
           if _dynamic_sampling_rounds(records) is None else
           "Dynamic sampling (rollout.filter_groups) is on and did not prevent it (nor on letter_counting and "
           "syllogism in the task sweep); try ")
        + "an SFT stage (sft:), easier prompts, or a larger model."))


CHECKS = (eval_below_start, entropy_and_truncation_rising, no_reward_spread, one_opening_for_all)


def new_warnings(records: list[dict]) -> list[HealthWarning]:
    """The warnings that start at the last record: those whose check holds now and did not hold one record earlier."""
    warnings = []
    for check in CHECKS:
        now = check(records)
        if now is not None and (len(records) < 2 or check(records[:-1]) is None):
            warnings.append(now)
    return warnings
