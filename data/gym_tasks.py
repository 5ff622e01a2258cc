"""reasoning-gym tasks (github.com/open-thought/reasoning-gym, 100+ procedurally generated reasoning tasks, each with its
own verifier) as prompt datasets.

Sources, in the query style of ``synthetic:`` (data/sources.py)::

    reasoning_gym:leg_counting?size=500&seed=0&max_animals=4
    reasoning_gym:composite?tasks=leg_counting:1,basic_arithmetic:2&size=500&seed=0&basic_arithmetic.max_terms=2

``size`` (default 500) rows, ``seed`` (default 0), and any field of the task's config dataclass
(``reasoning_gym.factory.DATASETS[task][1]``), read from its string by the field's type: int, float, bool
(``true``/``false``), str, a Literal or Enum value, ``none`` for an Optional, comma-separated lists
(``operators=+,-,*``; a ``+`` in the query is a plus sign here, not a space). ``composite`` mixes tasks by weight with
reasoning-gym's own ``CompositeDataset``; ``TASK.option=value`` sets an option of one of its tasks. An unknown task or
option is a ``ValueError`` naming the allowed ones.

Seeds: reasoning-gym draws row ``i`` from ``Random(seed + i)``, so its seeds 1 and 2 share all rows but one. A thinkrl
seed ``s`` is therefore passed on as ``s * SEED_STRIDE``: different seeds give disjoint streams of up to
``SEED_STRIDE`` rows, and held-out evaluation is simply another seed (``...?size=200&seed=1`` against training's
``seed=0``). The trainer also drops training rows whose prompt is in the eval set.

Rows: ``prompt`` (the entry's question), ``answer`` (its answer as a string, ``""`` for tasks with no single oracle
answer), ``rg_task`` (the task that made the row; a composite row's own task) and ``rg_entry``: JSON of
``{"task", "options", "entry"}`` (the options as their query strings, the entry with its metadata), everything
``rewards/gym_verifier.py`` needs to rebuild the task and call its ``score_answer``. Dataset rows must be plain
types, hence JSON. Tasks whose entries do not survive JSON (``arc_agi``, ``rearc``: their scorers compare tuples) are
refused.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

PREFIX = "reasoning_gym:"
SEED_STRIDE = 2**20
"""Rows per seed before seed s+1's stream begins. Keeps s * SEED_STRIDE + row < 2**32 (numpy's seed limit, which one
task uses) for seeds below 4096."""
MAX_SEED = 2**32 // SEED_STRIDE - 1
COMPOSITE = "composite"
_RESERVED = ("size", "seed")


def load_reasoning_gym(source: str) -> list[dict[str, str]]:
    """Rows (see module docstring) of ``reasoning_gym:TASK?...`` or ``reasoning_gym:composite?tasks=...``.

    Raises ValueError naming the source and what is allowed for an unknown task, option, value or an empty spec.
    """
    task, _, query = source[len(PREFIX) :].partition("?")
    # parse_qsl decodes "+" to a space; arithmetic operators are the only "+" anyone writes here.
    params = parse_qsl(query.replace("+", "%2B"), keep_blank_values=True, strict_parsing=bool(query))
    size, seed, options = 500, 0, {}
    for key, value in params:
        if key == "size":
            size = _read_count(source, key, value, low=1, high=SEED_STRIDE)
        elif key == "seed":
            seed = _read_count(source, key, value, low=0, high=MAX_SEED)
        else:
            options[key] = value
    if task == COMPOSITE:
        return _composite_rows(source, options, size=size, seed=seed)
    _check_task(source, task)
    dataset = make_task(task, size=size, seed=seed * SEED_STRIDE, options=options, source=source)
    entries = list(dataset)
    rows = [_row(task, options, entry) for entry in entries]
    _check_json_round_trip(source, task, dataset, entries[0], rows[0])
    return rows


def make_task(task: str, *, size: int, seed: int, options: dict[str, str], source: str | None = None):
    """``reasoning_gym.create_dataset(task, size=, seed=, **options)`` with ``options`` read from their strings by the
    config field's type. ``seed`` is passed as is. ValueError (naming ``source`` or the task) for an unknown option or
    a value the task's config rejects."""
    from reasoning_gym.factory import DATASETS, create_dataset

    where = source or f"reasoning_gym task {task!r}"
    _check_task(where, task)
    config_cls = DATASETS[task][1]
    readers = option_readers(config_cls)
    kwargs = {}
    for key, value in options.items():
        if key not in readers:
            raise ValueError(f"{where}: task {task!r} has no option {key!r}; allowed: {', '.join([*_RESERVED, *readers])}")
        try:
            kwargs[key] = readers[key](value)
        except ValueError as exc:
            raise ValueError(f"{where}: option {key!r} of task {task!r}: cannot read {value!r} ({exc})") from None
    try:
        return create_dataset(task, size=size, seed=seed, **kwargs)
    except (AssertionError, ValueError, TypeError) as exc:  # the config's validate() asserts
        raise ValueError(f"{where}: task {task!r} rejects options {options}: {str(exc) or type(exc).__name__}") from None


def task_names() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def option_readers(config_cls: type) -> dict[str, Callable[[str], Any]]:
    """Field name -> function reading that field's value from a query string, for the task options (not size/seed)."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: _reader(hints.get(f.name, Any)) for f in dataclasses.fields(config_cls) if f.name not in _RESERVED}


# ---------------------------------------------------------------------------------------------------------------------


def _row(task: str, options: dict[str, str], entry: dict) -> dict[str, str]:
    answer = entry.get("answer")
    record = {"task": task, "options": options, "entry": entry}
    return {
        "prompt": str(entry["question"]),
        "answer": "" if answer is None else str(answer),
        "rg_task": task,
        "rg_entry": json.dumps(record, default=str),
    }


def _composite_rows(source: str, options: dict[str, str], *, size: int, seed: int) -> list[dict[str, str]]:
    from reasoning_gym.composite import CompositeConfig, CompositeDataset, DatasetSpec

    if "tasks" not in options:
        raise ValueError(f"{source}: composite needs tasks=TASK:WEIGHT,TASK:WEIGHT,...")
    weights = {}
    for item in options.pop("tasks").split(","):
        name, _, weight = item.partition(":")
        _check_task(source, name, composite=False)
        try:
            weights[name] = float(weight or 1)
        except ValueError:
            raise ValueError(f"{source}: weight {weight!r} of task {name!r} is not a number") from None
        if not weights[name] > 0:
            raise ValueError(f"{source}: weight of task {name!r} must be > 0, got {weights[name]}")
    per_task: dict[str, dict[str, str]] = {name: {} for name in weights}
    for key, value in options.items():
        name, dot, option = key.partition(".")
        if not dot or name not in per_task:
            raise ValueError(f"{source}: composite takes tasks, size, seed and TASK.option for a task in tasks "
                             f"({', '.join(weights)}); got {key!r}")
        per_task[name][option] = value
    # Each task's options are read (and checked) here; the composite seeds its tasks itself (seed + position + 1).
    specs = []
    for name, task_options in per_task.items():
        checked = make_task(name, size=1, seed=0, options=task_options, source=source)
        config = {f.name: getattr(checked.config, f.name) for f in dataclasses.fields(checked.config) if f.name not in _RESERVED}
        specs.append(DatasetSpec(name=name, weight=weights[name], config=config))
    dataset = CompositeDataset(CompositeConfig(size=size, seed=seed * SEED_STRIDE, datasets=specs))
    rows, checked_tasks = [], set()
    for entry in dataset:
        task = entry["metadata"]["source_dataset"]
        rows.append(_row(task, per_task[task], entry))
        if task not in checked_tasks:
            checked_tasks.add(task)
            _check_json_round_trip(source, task, dataset.datasets[task], entry, rows[-1])
    return rows


def _check_task(where: str, task: str, *, composite: bool = True) -> None:
    names = task_names()
    if task not in names or (task == COMPOSITE and not composite):
        allowed = [n for n in names if composite or n != COMPOSITE]
        raise ValueError(f"{where}: unknown reasoning_gym task {task!r}; allowed: {', '.join(allowed)}")


def _check_json_round_trip(source: str, task: str, dataset, entry: dict, row: dict[str, str]) -> None:
    """The reward scores the JSON copy of an entry; refuse a task whose scorer judges that copy differently."""
    if entry.get("answer") is None:
        return
    stored = json.loads(row["rg_entry"])["entry"]
    if dataset.score_answer(entry["answer"], entry) != dataset.score_answer(entry["answer"], stored):
        raise ValueError(f"{source}: task {task!r} is not supported: its entries do not survive JSON serialisation, "
                         "so its verifier would score the stored copy wrongly")


def _read_count(source: str, key: str, value: str, *, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{source}: {key} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"{source}: {key} must be in [{low}, {high}], got {number}")
    return number


def _read_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


def _reader(annotation: Any) -> Callable[[str], Any]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return _read_bool
    if annotation in (int, float, str):
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return lambda value: annotation(value)
    if origin is typing.Literal:
        allowed = {str(a): a for a in args}
        return lambda value: allowed[value] if value in allowed else _not_in(value, list(allowed))
    if origin in (typing.Union, types.UnionType):
        inner = [_reader(a) for a in args if a is not type(None)]
        return lambda value: None if value.lower() in ("none", "null") else _first_that_reads(inner, value)
    if annotation in (tuple, list) or origin in (tuple, list, Sequence):
        item = _reader(args[0]) if args else str
        container = list if (annotation is list or origin is list) else tuple
        return lambda value: container(item(part) for part in value.split(",") if part != "")

    def unsupported(value: str):
        raise ValueError(f"options of type {annotation} cannot be set from a source string")

    return unsupported


def _not_in(value: str, allowed: list[str]):
    raise ValueError(f"allowed: {', '.join(allowed)}")


def _first_that_reads(readers: list[Callable[[str], Any]], value: str) -> Any:
    errors = []
    for read in readers:
        try:
            return read(value)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError("; ".join(errors) or "unreadable")
