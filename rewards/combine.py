"""Weighted sum of reward functions, with per-reward breakdown, applicability and failure counts for logging.

``total[i] = Σ_k weight_k · r_k[i]`` where ``r_k[i]`` is reward k's score for completion i, or ``on_error`` when that
call raised, timed out, crashed its worker, or returned a non-finite value; each such case is counted in
``failures[name]`` (timeouts also in ``timeouts[name]``). The shape follows TitanRL
``rubrics/rubric.py::RubricOutput.reward_breakdown``: the total drives advantages, the breakdown goes to the logger.

``None`` is not a failure: it means "not applicable" (an accuracy reward whose gold answer is unusable, e.g. the
label "see the figure"). It is recorded in ``skipped[name][i]``, the score is NaN in ``per_reward``, and when the reward
has a non-zero weight the row is not applicable as a whole: ``applicable[i]`` is False and ``total[i]`` is NaN, so that
``train.advantages`` keeps that row's group out of the advantages and the loss (a 0.0 would train the policy on a
label nobody can match). TRL 1.16 instead sums the rewards that did apply (``nansum``) and drops a row only when every
reward returned None; open-r1/TRL ``accuracy_reward`` return None for an unparseable gold, as ours do.

Where rewards run:
* Inline, in the calling thread, on the whole batch: the cheap rewards in ``INLINE_REWARDS`` (regex/``ast`` work that
  is linear in the completion length and bounded by construction).
* In a :class:`rewards.executor.RewardPool`, one call per completion with a hard ``timeout_s``: math-verify
  (``math_accuracy``, ``cosine_length``), ``code_exec`` and every custom ``package.module:function`` reward, since any
  of them can hang. A custom reward therefore sees one completion per call (batch-relative rewards, e.g. normalising
  length within the group, are not supported as custom rewards). A hanging call costs at most ``timeout_s``; its worker
  is killed and replaced; nothing here uses signals, so this works from any thread and inside worker processes. A batch
  in which k calls hang therefore takes about ``ceil(k / num_workers) * timeout_s`` longer: a reward that always hangs
  slows every step a lot (and says so in the log) rather than stopping training. Each worker has a memory limit
  (``worker_memory_mb``: a call that goes over it fails, its worker is replaced) and is replaced after
  ``worker_max_calls`` calls (see :mod:`rewards.executor`).

A reward that raises is caught, counted and logged once (per reward and failure kind) with a warning: training goes on.
Configuration mistakes are different: an unknown reward name, an unknown option of a built-in reward, or an invalid
option value raise ``ValueError`` in the constructor.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
from dataclasses import dataclass, field

from rewards.executor import CallResult, RewardPool, check_worker_limits
from rewards.extract import with_prefilled_answer
from rewards.registry import REWARD_FNS, resolve_reward

logger = logging.getLogger(__name__)

CORRECT_SCORE = 1.0
"""A completion is correct when the accuracy reward (rewards.accuracy_reward) gives it at least this: accuracy rewards
score 1 for a right answer (partial credit, e.g. countdown's format-only 0.1, stays below)."""


def is_correct(score: float | None) -> bool:
    """The one "is correct" rule: training `accuracy`, eval pass@k, the preflight and `thinkrl sample --keep correct`.
    NaN and None (the reward did not apply) are not correct.

    >>> is_correct(1.0), is_correct(0.1), is_correct(float("nan")), is_correct(None)
    (True, False, False, False)
    """
    return score is not None and score >= CORRECT_SCORE


INLINE_REWARDS = frozenset(
    {
        "gsm8k_accuracy",
        "arithmetic_accuracy",
        "countdown",
        "format_strict",
        "format_lenient",
        "tag_count",
        "reasoning_steps",
        "overlong_penalty",
        "repetition_penalty",
        "tool_errors",
    }
)


@dataclass
class RewardSpec:
    """One reward term; plain values, the trainer builds these from its config."""

    name: str
    """A ``REWARD_FNS`` name or ``"package.module:function"``."""
    weight: float = 1.0
    """Multiplies this reward in the total."""
    kwargs: dict = field(default_factory=dict)
    """Options passed to the reward function (they override a dataset column of the same name)."""


@dataclass
class RewardOutput:
    total: list[float]  # [N] Σ weight·reward (a failed reward counts as `on_error`); NaN where not `applicable`
    per_reward: dict[str, list[float]]  # name -> [N] unweighted scores, failures replaced by `on_error`, NaN if skipped
    failures: dict[str, int]  # name -> completions where that reward raised, timed out, crashed or gave NaN/inf
    timeouts: dict[str, int] = field(default_factory=dict)  # name -> the subset of failures that were timeouts
    skipped: dict[str, list[bool]] = field(default_factory=dict)  # name -> [N] True where it returned None (n/a)
    applicable: list[bool] = field(default_factory=list)  # [N] False where a reward of non-zero weight was skipped

    def skipped_counts(self) -> dict[str, int]:
        """name -> completions that reward skipped (logged as ``reward_skipped/NAME``)."""
        return {name: sum(flags) for name, flags in self.skipped.items()}

    def select(self, rows: list[int]) -> "RewardOutput":
        """The scores of completions `rows`, in that order. Failure and timeout counts stay those of every completion
        scored (kept or not): they count the reward's work, not the rows."""
        def pick(values: list) -> list:
            return [values[r] for r in rows]

        return RewardOutput(
            total=pick(self.total), per_reward={name: pick(v) for name, v in self.per_reward.items()},
            failures=dict(self.failures), timeouts=dict(self.timeouts),
            skipped={name: pick(v) for name, v in self.skipped.items()},
            applicable=pick(self.applicable) if self.applicable else [],
        )

    @staticmethod
    def concat(outputs: list["RewardOutput"]) -> "RewardOutput":
        """The completions of `outputs`, in order, as one output; failure and timeout counts add up."""
        def join(get) -> list:
            return [value for output in outputs for value in get(output)]

        def add(get) -> dict[str, int]:
            total: dict[str, int] = {}
            for output in outputs:
                for name, count in get(output).items():
                    total[name] = total.get(name, 0) + count
            return total

        first = outputs[0]
        return RewardOutput(
            total=join(lambda o: o.total),
            per_reward={name: join(lambda o, n=name: o.per_reward[n]) for name in first.per_reward},
            failures=add(lambda o: o.failures), timeouts=add(lambda o: o.timeouts),
            skipped={name: join(lambda o, n=name: o.skipped[n]) for name in first.skipped},
            applicable=join(lambda o: o.applicable),
        )


def _check_builtin_options(spec: RewardSpec, fn) -> None:
    """Reject misspelled options (every built-in swallows dataset columns with ``**_``, so a typo would otherwise be
    ignored silently) and invalid values (a dry run on an empty batch runs the function's own option checks)."""
    params = inspect.signature(fn).parameters
    named = [p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(spec.kwargs) - {p.name for p in named})
    if unknown:
        allowed = sorted(p.name for p in named)
        raise ValueError(f"reward {spec.name!r} got unknown option(s) {unknown}; it accepts {allowed}")
    # Column parameters (answer, numbers, target, tests, completion_length) default to None; give them empty columns.
    columns = {p.name: [] for p in named if p.default is None and p.name not in spec.kwargs}
    try:
        fn([], [], **columns, **spec.kwargs)
    except Exception as e:
        raise ValueError(f"reward {spec.name!r} rejects its options {spec.kwargs}: {e}") from e


def _as_score(value: object) -> float | None:
    """A finite float, or None for None / non-numbers / NaN / inf."""
    if value is None or isinstance(value, str):
        return None
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


class RewardCombiner:
    """Scores a batch with several weighted rewards. Use as a context manager or call :meth:`close` (stops workers)."""

    def __init__(
        self, specs: list[RewardSpec], *, timeout_s: float = 10.0, num_workers: int = 2, on_error: float = 0.0,
        worker_memory_mb: int = 2048, worker_max_calls: int = 1000,
    ):
        self.specs = list(specs)
        names = [s.name for s in self.specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"reward names must be unique (breakdown is keyed by name), repeated: {duplicates}")
        if not timeout_s > 0 or num_workers < 1 or not math.isfinite(on_error):
            raise ValueError(f"need timeout_s > 0, num_workers >= 1, finite on_error; got {timeout_s}, {num_workers}, "
                             f"{on_error}")
        check_worker_limits(worker_memory_mb, worker_max_calls)  # the pool starts lazily: check now
        self.worker_memory_mb, self.worker_max_calls = worker_memory_mb, worker_max_calls
        for spec in self.specs:
            if not isinstance(spec.weight, (int, float)) or not math.isfinite(spec.weight):
                raise ValueError(f"reward {spec.name!r} weight must be a finite number, got {spec.weight!r}")
        self._fns = [resolve_reward(spec.name) for spec in self.specs]  # ValueError for unknown names, up front
        for spec, fn in zip(self.specs, self._fns):
            if spec.name in REWARD_FNS:
                _check_builtin_options(spec, fn)
        self.timeout_s, self.num_workers, self.on_error = float(timeout_s), num_workers, float(on_error)
        self._pooled = [spec.name not in INLINE_REWARDS for spec in self.specs]
        self._pool: RewardPool | None = None  # started lazily: no processes unless a pooled reward is configured
        self._pool_lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()

    # -- lifecycle
    def _get_pool(self) -> RewardPool:
        with self._pool_lock:
            if self._pool is None:
                names = [s.name for s, pooled in zip(self.specs, self._pooled) if pooled]
                self._pool = RewardPool(self.num_workers, preload=names, memory_mb=self.worker_memory_mb,
                                        max_calls=self.worker_max_calls)
            return self._pool

    def start(self) -> None:
        """Start the worker pool now and wait until it is ready (else the first call pays the start, ~0.3-0.5 s)."""
        if any(self._pooled):
            self._get_pool().start()

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> RewardCombiner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- scoring
    def _warn_once(self, name: str, kind: str, detail: str) -> None:
        if (name, kind) not in self._warned:
            self._warned.add((name, kind))
            logger.warning("reward %r %s: %s; scoring on_error=%s (logged once per reward and kind)",
                           name, kind, detail, self.on_error)

    def _run_inline(self, spec: RewardSpec, fn, completions: list, prompts: list, columns: dict) -> list[CallResult]:
        n = len(completions)
        try:
            out = fn(completions, prompts, **{**columns, **spec.kwargs})
        except Exception as e:
            return [CallResult("error", error=f"{type(e).__name__}: {e}")] * n
        if not isinstance(out, (list, tuple)) or len(out) != n:
            got = len(out) if isinstance(out, (list, tuple)) else type(out).__name__
            return [CallResult("error", error=f"expected a list of {n} scores, got {got}")] * n
        return [CallResult("ok", value) for value in out]  # type: ignore[arg-type]

    def __call__(
        self, completions: list[str], prompts: list[str], columns: dict[str, list] | None = None
    ) -> RewardOutput:
        """Score ``completions`` [N] (with their ``prompts`` [N] and dataset ``columns``, each a list of N values)."""
        columns = dict(columns or {})
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"got {n} completions but {len(prompts)} prompts")
        for key, values in columns.items():
            if len(values) != n:
                raise ValueError(f"column {key!r} has {len(values)} values for {n} completions")
        completions = [with_prefilled_answer(c, p) for c, p in zip(completions, prompts, strict=True)]

        raw: dict[str, list[CallResult]] = {}
        tasks, owners = [], []
        for spec, fn, pooled in zip(self.specs, self._fns, self._pooled):
            if not pooled:
                raw[spec.name] = self._run_inline(spec, fn, completions, prompts, columns)
                continue
            for i in range(n):
                row = {k: v[i] for k, v in columns.items()}
                tasks.append((spec.name, spec.kwargs, completions[i], prompts[i], row))
                owners.append(spec.name)
        if tasks:
            for name, result in zip(owners, self._get_pool().run(tasks, self.timeout_s)):
                raw.setdefault(name, []).append(result)

        total = [0.0] * n
        applicable = [True] * n
        per_reward: dict[str, list[float]] = {}
        skipped: dict[str, list[bool]] = {}
        failures: dict[str, int] = {}
        timeouts: dict[str, int] = {}
        for spec in self.specs:
            scores, flags, failed, timed_out = [], [], 0, 0
            for result in raw.get(spec.name, []):
                flags.append(result.status == "ok" and result.value is None)  # "not applicable", not a failure
                if flags[-1]:
                    scores.append(math.nan)
                    continue
                value = _as_score(result.value) if result.status == "ok" else None
                if value is None:
                    failed += 1
                    if result.status == "timeout":
                        timed_out += 1
                    if result.status != "ok":
                        self._warn_once(spec.name, result.status, result.error)
                    else:
                        self._warn_once(spec.name, "invalid value", f"returned {result.value!r}")
                    value = self.on_error
                scores.append(value)
            per_reward[spec.name], skipped[spec.name] = scores, flags
            failures[spec.name], timeouts[spec.name] = failed, timed_out
            for i, value in enumerate(scores):
                if flags[i]:
                    applicable[i] = applicable[i] and spec.weight == 0  # a weight-0 reward is only logged
                else:
                    total[i] += spec.weight * value
        total = [t if ok else math.nan for t, ok in zip(total, applicable)]
        return RewardOutput(total=total, per_reward=per_reward, failures=failures, timeouts=timeouts,
                            skipped=skipped, applicable=applicable)
