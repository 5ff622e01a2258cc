"""Load a prompt dataset from wherever it lives into one shape: columns ``prompt``, ``answer`` (+ ``keep_columns``).

``source`` may be

* a file: ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv``, or a glob of such files (``data/shard-*.parquet``);
* a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (read with
  ``datasets.load_from_disk``);
* any other local directory ``datasets.load_dataset(path)`` understands: a folder of data files, where splits come from
  the file names (``train.jsonl``, ``test.jsonl``; a folder of ``data-0.jsonl``, ``data-1.jsonl`` is all ``train``), or
  a folder with a dataset card ``README.md`` that declares its configs;
* ``reasoning_gym:<task>[?size=500&seed=0&option=value]`` or ``reasoning_gym:composite?tasks=a:1,b:2&...``: a
  reasoning-gym task, with columns ``rg_task``/``rg_entry`` for the ``reasoning_gym`` reward (data/gym_tasks.py);
* ``synthetic:<kind>`` with ``kind`` in :data:`SYNTHETIC_KINDS` and an optional query string
  ``synthetic:countdown?n=2000&seed=1`` (defaults ``n=1000``, ``seed=0``), plus generator options such as
  ``synthetic:arithmetic?max_digits=2&ops=add,sub`` (see :data:`_SYNTHETIC_OPTIONS`). The query string keeps the whole source in
  one config value, so the trainer needs no extra knobs for it;
* otherwise a Hugging Face Hub name (``openai/gsm8k``; pass ``subset="main"`` for its config). This only works where
  the hub is reachable; on an air-gapped machine set ``HF_HUB_OFFLINE=1`` or ``datasets`` retries for ~25 s before the
  clear error below.

Splits: a single table (one file, a glob, a saved ``Dataset``, a synthetic source) *is* the data, and ``split`` is not
used for it; give the eval data as its own file (`eval.source`). Sources with named splits
(a saved ``DatasetDict``, a directory, a hub dataset) must have ``split``, or a ``ValueError`` lists the ones they have.
"""

from __future__ import annotations

import glob as globlib
import json
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import datasets

from data.synthetic import SYNTHETIC_KINDS, make_synthetic

DATA_FORMATS = ("auto", "json", "parquet", "csv", "hf_disk", "hf")
"""Allowed ``data_format`` values. ``hf_disk`` = a ``save_to_disk`` folder, ``hf`` = ``datasets.load_dataset(source)``
(a local dataset folder or a hub name); ``auto`` picks from the suffix / folder contents."""

_SUFFIX_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# Files `save_to_disk` writes; their presence marks a folder for `load_from_disk` rather than `load_dataset`.
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")
_SYNTHETIC_PREFIX = "synthetic:"
_REASONING_GYM_PREFIX = "reasoning_gym:"


def load_prompt_dataset(
    source: str,
    *,
    split: str = "train",
    prompt_column: str = "prompt",
    answer_column: str = "answer",
    keep_columns: list[str] | None = None,
    data_format: str = "auto",
    limit: int | None = None,
    subset: str | None = None,
) -> datasets.Dataset:
    """Load ``source`` (see module docstring) as a Dataset with columns ``prompt``, ``answer`` and ``keep_columns``.

    Args:
        source: file, glob, folder, ``synthetic:<kind>[?n=N&seed=S]`` or hub name.
        split: split to take from sources that have named splits; ignored for single-table sources.
        prompt_column: source column holding the question (a string, or a list of ``{"role", "content"}`` chat
            messages, which is kept as messages). Renamed to ``prompt``.
        answer_column: source column holding the reference answer; renamed to ``answer`` and cast to ``str``
            (e.g. countdown's int ``target`` becomes ``"24"``).
        keep_columns: extra source columns to keep under their own names (countdown's ``numbers``/``target``, a code
            task's ``tests``). ``None`` keeps none for files and hub data, and *all* generator columns for
            ``synthetic:`` sources (their extras, e.g. countdown's ``numbers``/``target``, are what rewards need).
        data_format: one of :data:`DATA_FORMATS`.
        limit: keep only the first ``limit`` rows (in source order, before any shuffling).
        subset: hub/``load_dataset`` config name (``"main"`` for ``openai/gsm8k``); unused elsewhere.

    Raises:
        ValueError: unknown format, missing split, missing column (the message names the source, the column and the
            columns that exist), or a prompt/answer column of the wrong type.
        FileNotFoundError: ``source`` looks like a local path but nothing is there.
        ConnectionError: ``source`` was taken as a hub name and the hub could not be reached.
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(f"unknown data_format {data_format!r}; allowed: {', '.join(DATA_FORMATS)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")

    if source.startswith((_SYNTHETIC_PREFIX, _REASONING_GYM_PREFIX)):
        ds = _load_synthetic(source) if source.startswith(_SYNTHETIC_PREFIX) else _load_reasoning_gym(source)
        if keep_columns is None:
            keep_columns = [c for c in ds.column_names if c not in ("prompt", "answer")]
    else:
        ds = _load_table(source, split=split, data_format=data_format, subset=subset)

    ds = _select_columns(ds, source, prompt_column, answer_column, keep_columns or [])
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


# ---------------------------------------------------------------------------------------------------------------------
# Loading


# Generator options a synthetic source's query string may set, beyond n and seed, with how to read each value.
# `ops` names arithmetic operators in words because a literal "+" in a query string decodes to a space.
_OPERATOR_NAMES = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_SYNTHETIC_OPTIONS: dict[str, dict[str, Callable[[str], Any]]] = {
    "arithmetic": {
        "min_digits": int, "max_digits": int,
        "ops": lambda value: tuple(_OPERATOR_NAMES[name] if name in _OPERATOR_NAMES else _bad_op(name) for name in value.split(",")),
    },
    "countdown": {},
    "gsm8k_style": {},
}


def _bad_op(name: str):
    raise ValueError(f"unknown operator {name!r}; allowed: {', '.join(_OPERATOR_NAMES)} (comma-separated)")


def _load_synthetic(source: str) -> datasets.Dataset:
    """``synthetic:<kind>?n=N&seed=S&option=value``: n and seed for every kind, plus the generator's options in
    :data:`_SYNTHETIC_OPTIONS` (``synthetic:arithmetic?n=2000&seed=0&max_digits=3&ops=add,sub``)."""
    spec = source[len(_SYNTHETIC_PREFIX) :]
    kind, _, query = spec.partition("?")
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"unknown synthetic source {kind!r} in {source!r}; allowed: {', '.join(SYNTHETIC_KINDS)}")
    readers: dict[str, Callable[[str], Any]] = {"n": int, "seed": int, **_SYNTHETIC_OPTIONS[kind]}
    params: dict[str, Any] = {"n": 1000, "seed": 0}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in readers:
            raise ValueError(f"unknown parameter {key!r} in {source!r}; allowed: {', '.join(readers)}")
        try:
            params[key] = readers[key](value)
        except ValueError as exc:
            raise ValueError(f"parameter {key!r} in {source!r}: cannot read {value!r} ({exc})") from None
    n, seed = params.pop("n"), params.pop("seed")
    return datasets.Dataset.from_list(make_synthetic(kind, n, seed, **params))


def _load_reasoning_gym(source: str) -> datasets.Dataset:
    """``reasoning_gym:<task>?size=&seed=&option=value`` (data/gym_tasks.py; imported only for such a source)."""
    from data.gym_tasks import load_reasoning_gym

    return datasets.Dataset.from_list(load_reasoning_gym(source))


def _load_table(source: str, *, split: str, data_format: str, subset: str | None) -> datasets.Dataset:
    path = Path(source).expanduser()
    is_glob = globlib.has_magic(source)

    if path.is_file() or is_glob:
        files = [str(path)] if path.is_file() else sorted(globlib.glob(os.path.expanduser(source)))
        if not files:
            raise FileNotFoundError(f"no files match {source!r}")
        fmt = data_format if data_format != "auto" else _format_from_suffix(files[0], source)
        if fmt not in ("json", "parquet", "csv"):
            raise ValueError(f"data_format={fmt!r} cannot read files; for files use json, parquet or csv ({source})")
        for file in files:
            if os.path.getsize(file) == 0:
                raise ValueError(f"{file}: the file is empty (no rows)")
        return _nonempty(_read(lambda: datasets.load_dataset(fmt, data_files=files, split="train"), source, files, fmt), source)

    if path.is_dir():
        inside = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIX_FORMATS)
        if data_format == "hf_disk" or (data_format == "auto" and _is_save_to_disk_dir(path)):
            loaded = _read(lambda: datasets.load_from_disk(str(path)), source, [], "hf_disk")
        elif data_format in ("json", "parquet", "csv"):
            # `data_dir` keeps the file-name split inference (train*.jsonl -> train, test*.jsonl -> test).
            loaded = _read(lambda: datasets.load_dataset(data_format, data_dir=str(path)), source, inside, data_format)
        else:
            loaded = _read(lambda: datasets.load_dataset(str(path), subset), source, inside, "auto")
        return _nonempty(_pick_split(loaded, split, source), source)

    if _looks_like_local_path(source) or data_format in ("json", "parquet", "csv", "hf_disk"):
        raise FileNotFoundError(f"{source!r} does not exist (resolved to {path.resolve()})")
    return _load_from_hub(source, split=split, subset=subset)


def _read(load: Callable[[], Any], source: str, files: list[str], fmt: str):
    """`load()`, with any failure of the reader (datasets/pyarrow/pandas raise many types, the cause often three
    levels down) turned into one ValueError that names the file and, for text files, the line."""
    try:
        return load()
    except (FileNotFoundError, ConnectionError):
        raise
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed
        raise ValueError(_diagnose(files, fmt) or f"{source}: cannot read it as {fmt} data ({_root_cause(exc)})") from None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def _diagnose(files: list[str], fmt: str) -> str | None:
    """The first bad line of a text file, found by reading it again (only after the reader failed): bytes that are
    not UTF-8, a JSON line that does not parse or is not an object, a file of blank lines. None: nothing found."""
    for file in files:
        suffix = Path(file).suffix.lower()
        if _SUFFIX_FORMATS.get(suffix, fmt) not in ("json", "csv"):
            continue
        is_json, rows, bad_json, bad_first = _SUFFIX_FORMATS.get(suffix, fmt) == "json", 0, None, False
        with open(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return f"{file}: line {number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                rows += bool(line.strip())
                if is_json and bad_json is None and line.strip():
                    try:
                        value = json.loads(line.rstrip("\r\n"))
                        if not isinstance(value, dict):
                            bad_json = f"{file}: line {number}: not a JSON object (a {type(value).__name__})"
                    except json.JSONDecodeError as e:
                        bad_json = f"{file}: line {number}: not valid JSON ({e.msg} at column {e.colno})"
                    bad_first = bad_json is not None and rows == 1
        if not rows or (rows == 1 and not is_json):
            return f"{file}: no rows (only {'blank lines' if not rows else 'a header line'})"
        if bad_first and suffix == ".json":  # not JSON lines from the first row on: one JSON document, then
            try:
                json.loads(Path(file).read_text(encoding="utf-8"))
                continue
            except json.JSONDecodeError as e:
                return f"{file}: line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})"
        if bad_json is not None:
            return bad_json
    return None


def _nonempty(ds: datasets.Dataset, source: str) -> datasets.Dataset:
    if len(ds) == 0:
        raise ValueError(f"{source}: no rows")
    return ds


def _load_from_hub(name: str, *, split: str, subset: str | None) -> datasets.Dataset:
    hint = (
        f"{name!r} is not a local path, so it was looked up on the Hugging Face Hub, which failed. If this machine "
        "cannot reach the hub, download the dataset where it can (e.g. `load_dataset(...).save_to_disk(dir)` or "
        "`.to_parquet(file)`) and pass that local path, or use a `synthetic:countdown` / `synthetic:arithmetic` / "
        "`synthetic:gsm8k_style` source."
    )
    try:
        dsd = datasets.load_dataset(name, subset)
    except FileNotFoundError as e:  # DatasetNotFoundError: hub reachable, no such dataset (or a typo'd local path).
        raise FileNotFoundError(f"{hint} Cause: {e}") from e
    except (ConnectionError, OSError) as e:  # includes OfflineModeIsEnabled and DNS/HTTP failures.
        raise ConnectionError(f"{hint} Cause: {type(e).__name__}: {e}") from e
    return _pick_split(dsd, split, name)


def _pick_split(loaded: datasets.Dataset | datasets.DatasetDict, split: str, source: str) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):  # a saved single Dataset: one table, `split` unused (module docstring).
        return loaded
    if split not in loaded:
        raise ValueError(f"split {split!r} not found in {source!r}; available splits: {sorted(loaded)}")
    return loaded[split]


def _format_from_suffix(file: str, source: str) -> str:
    suffix = Path(file).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise ValueError(
            f"cannot tell the format of {source!r} from suffix {suffix!r}; known suffixes: "
            f"{', '.join(_SUFFIX_FORMATS)}; or pass data_format (one of {', '.join(DATA_FORMATS)})"
        )
    return _SUFFIX_FORMATS[suffix]


def _is_save_to_disk_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS)


def _looks_like_local_path(source: str) -> bool:
    # Hub names are `name` or `org/name`, so "/" alone does not mark a path; these do.
    return (
        source.startswith(("/", ".", "~"))
        or Path(source).suffix.lower() in _SUFFIX_FORMATS
        or source.count("/") > 1
    )


# ---------------------------------------------------------------------------------------------------------------------
# Columns


def _select_columns(
    ds: datasets.Dataset, source: str, prompt_column: str, answer_column: str, keep_columns: list[str]
) -> datasets.Dataset:
    if prompt_column == answer_column:
        raise ValueError(f"prompt_column and answer_column are both {prompt_column!r} ({source!r})")
    wanted = [prompt_column, answer_column, *keep_columns]
    for column in wanted:
        if column not in ds.column_names:
            raise ValueError(f"column {column!r} not found in {source!r}; available columns: {ds.column_names}")
    for column in keep_columns:
        # A kept column named like an output column would be overwritten by the rename below.
        if (column == "prompt" and prompt_column != "prompt") or (column == "answer" and answer_column != "answer"):
            raise ValueError(f"keep_columns entry {column!r} clashes with the output column of that name ({source!r})")
    extras = [c for c in dict.fromkeys(keep_columns) if c not in (prompt_column, answer_column)]

    ds = ds.select_columns([prompt_column, answer_column, *extras])
    ds = ds.rename_columns({c: t for c, t in ((prompt_column, "prompt"), (answer_column, "answer")) if c != t})

    _check_prompt_feature(ds.features["prompt"], source, prompt_column)
    answer_feature = ds.features["answer"]
    if not isinstance(answer_feature, datasets.Value):
        raise ValueError(
            f"answer column {answer_column!r} in {source!r} must hold scalars (str/int/float), got {answer_feature}"
        )
    if answer_feature.dtype not in ("string", "large_string"):
        ds = ds.cast_column("answer", datasets.Value("string"))
    return ds


def _check_prompt_feature(feature, source: str, column: str) -> None:
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return
    inner = getattr(feature, "feature", None)  # List / LargeList / Sequence of chat messages.
    if isinstance(inner, dict) and {"role", "content"} <= set(inner):
        return
    raise ValueError(
        f"prompt column {column!r} in {source!r} must hold strings or lists of {{'role', 'content'}} chat messages, "
        f"got {feature}"
    )
