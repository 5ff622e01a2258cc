"""data.sources: every local format loads into prompt/answer (+extras); errors say what is wrong. Data in tmp_path."""

from __future__ import annotations

import json
import time

import datasets
import huggingface_hub.constants
import pytest

from data.sources import DATA_FORMATS, load_prompt_dataset
from data.synthetic import make_arithmetic, make_countdown, write_dataset

ROWS = [
    {"prompt": "What is 1 + 1?", "answer": 2, "numbers": [1, 1]},
    {"prompt": "What is 2 + 3?", "answer": 5, "numbers": [2, 3]},
    {"prompt": "What is 4 * 4?", "answer": 16, "numbers": [4, 4]},
]


@pytest.fixture(autouse=True)
def _hermetic_datasets(tmp_path, monkeypatch):
    # load_dataset caches the Arrow files it builds; keep them in this test's tmp_path, not in ~/.cache.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_each_file_format_loads_prompt_and_answer_as_strings(tmp_path, suffix):
    path = write_dataset(ROWS, tmp_path / f"train{suffix}")
    ds = load_prompt_dataset(str(path))
    assert ds.column_names == ["prompt", "answer"]
    assert ds["prompt"] == [r["prompt"] for r in ROWS]
    assert ds["answer"] == ["2", "5", "16"]  # int answers are cast to str for the rewards


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_keep_columns_keeps_list_extras(tmp_path, suffix):
    path = write_dataset(ROWS, tmp_path / f"train{suffix}")
    ds = load_prompt_dataset(str(path), keep_columns=["numbers"])
    assert ds.column_names == ["prompt", "answer", "numbers"]
    assert ds["numbers"] == [[1, 1], [2, 3], [4, 4]]


def test_other_column_names_are_renamed(tmp_path):
    rows = [{"question": r["prompt"], "target": r["answer"], "id": i} for i, r in enumerate(ROWS)]
    path = write_dataset(rows, tmp_path / "q.jsonl")
    ds = load_prompt_dataset(str(path), prompt_column="question", answer_column="target", keep_columns=["id"])
    assert ds.column_names == ["prompt", "answer", "id"]
    assert ds[1] == {"prompt": "What is 2 + 3?", "answer": "5", "id": 1}


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = tmp_path / "rows.txt"
    write_dataset(ROWS, tmp_path / "rows.jsonl").rename(path)
    assert len(load_prompt_dataset(str(path), data_format="json")) == 3
    with pytest.raises(ValueError, match=r"suffix '\.txt'"):
        load_prompt_dataset(str(path))


def test_chat_message_prompts_stay_messages(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1 + 1?"}]
    path = write_dataset([{"prompt": messages, "answer": "2"}], tmp_path / "chat.jsonl")
    ds = load_prompt_dataset(str(path))
    assert ds[0]["prompt"] == messages


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    assert load_prompt_dataset(str(tmp_path / "single"))["answer"] == ["2", "5", "16"]

    dsd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    )
    dsd.save_to_disk(str(tmp_path / "dict"))
    assert load_prompt_dataset(str(tmp_path / "dict"))["prompt"] == [ROWS[0]["prompt"], ROWS[1]["prompt"]]
    assert load_prompt_dataset(str(tmp_path / "dict"), split="test")["prompt"] == [ROWS[2]["prompt"]]
    assert len(load_prompt_dataset(str(tmp_path / "dict"), data_format="hf_disk")) == 2
    with pytest.raises(ValueError, match=r"split 'validation'.*\['test', 'train'\]"):
        load_prompt_dataset(str(tmp_path / "dict"), split="validation")


def test_directory_of_split_files_picks_the_split(tmp_path):
    write_dataset(ROWS[:2], tmp_path / "d" / "train.jsonl")
    write_dataset(ROWS[2:], tmp_path / "d" / "test.jsonl")
    assert len(load_prompt_dataset(str(tmp_path / "d"))) == 2
    assert load_prompt_dataset(str(tmp_path / "d"), split="test")["answer"] == ["16"]
    assert load_prompt_dataset(str(tmp_path / "d"), split="test", data_format="json")["answer"] == ["16"]
    with pytest.raises(ValueError, match=r"available splits: \['test', 'train'\]"):
        load_prompt_dataset(str(tmp_path / "d"), split="validation")


def test_directory_and_glob_of_shards_load_all_rows(tmp_path):
    for i in range(3):
        write_dataset([ROWS[i]], tmp_path / "shards" / f"data-{i}.jsonl")
    assert sorted(load_prompt_dataset(str(tmp_path / "shards"))["answer"]) == ["16", "2", "5"]
    assert sorted(load_prompt_dataset(str(tmp_path / "shards" / "data-*.jsonl"))["answer"]) == ["16", "2", "5"]
    with pytest.raises(FileNotFoundError, match="no files match"):
        load_prompt_dataset(str(tmp_path / "shards" / "nothing-*.jsonl"))


def test_missing_column_error_names_file_column_and_available_columns(tmp_path):
    path = write_dataset(ROWS, tmp_path / "train.jsonl")
    with pytest.raises(ValueError) as err:
        load_prompt_dataset(str(path), prompt_column="question")
    message = str(err.value)
    assert "train.jsonl" in message and "'question'" in message
    assert "['prompt', 'answer', 'numbers']" in message
    with pytest.raises(ValueError, match="'tests'"):
        load_prompt_dataset(str(path), keep_columns=["tests"])


def test_bad_column_types_and_clashes_are_rejected(tmp_path):
    path = write_dataset([{"prompt": "q", "answer": {"a": 1}, "n": 3}], tmp_path / "nested.jsonl")
    with pytest.raises(ValueError, match="must hold scalars"):
        load_prompt_dataset(str(path))
    with pytest.raises(ValueError, match="must hold strings or lists"):
        load_prompt_dataset(str(path), prompt_column="n", answer_column="prompt")
    with pytest.raises(ValueError, match="clashes"):
        load_prompt_dataset(str(path), prompt_column="n", answer_column="prompt", keep_columns=["answer"])


def test_unknown_data_format_lists_the_allowed_ones(tmp_path):
    path = write_dataset(ROWS, tmp_path / "train.jsonl")
    with pytest.raises(ValueError) as err:
        load_prompt_dataset(str(path), data_format="xml")
    assert all(fmt in str(err.value) for fmt in DATA_FORMATS)


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt_dataset(str(tmp_path / "nope.parquet"))
    with pytest.raises(FileNotFoundError):
        load_prompt_dataset("./no/such/dir")


def test_unreachable_hub_fails_fast_with_a_clear_error(monkeypatch):
    # The offline flags are read once at import, so patch the imported constants as well as the environment;
    # without them datasets retries the HTTP request for ~25 s.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        load_prompt_dataset("openai/gsm8k", subset="main")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "openai/gsm8k" in message and "Hub" in message and "local path" in message


def test_limit_keeps_the_first_rows(tmp_path):
    path = write_dataset(ROWS, tmp_path / "train.parquet")
    assert load_prompt_dataset(str(path), limit=2)["answer"] == ["2", "5"]
    assert len(load_prompt_dataset(str(path), limit=100)) == 3


def test_synthetic_source_matches_the_generator_and_keeps_its_extras():
    ds = load_prompt_dataset("synthetic:countdown?n=20&seed=3")
    expected = make_countdown(20, 3)
    assert ds.column_names == ["prompt", "answer", "numbers", "target"]
    assert ds["prompt"] == [r["prompt"] for r in expected]
    assert ds["target"] == [r["target"] for r in expected]
    assert len(load_prompt_dataset("synthetic:arithmetic")) == 1000  # defaults n=1000, seed=0
    gsm = load_prompt_dataset("synthetic:gsm8k_style?n=5", keep_columns=[])
    assert gsm.column_names == ["prompt", "answer"] and "####" in gsm[0]["answer"]


def test_synthetic_source_passes_generator_options():
    ds = load_prompt_dataset("synthetic:arithmetic?n=50&seed=4&max_digits=2&ops=add,sub")
    assert ds.to_list() == make_arithmetic(50, 4, max_digits=2, ops=("+", "-"))
    operators = {prompt.split()[3] for prompt in ds["prompt"]}  # "What is A op B?"
    assert operators == {"+", "-"}
    assert all(abs(int(answer)) <= 99 + 99 for answer in ds["answer"])


@pytest.mark.parametrize(
    "source, match",
    [
        ("synthetic:sudoku", "allowed: countdown, arithmetic, gsm8k_style"),
        ("synthetic:countdown?size=3", "unknown parameter 'size'"),
        ("synthetic:countdown?n=ten", "parameter 'n' .* cannot read 'ten'"),
        ("synthetic:countdown?max_digits=2", "unknown parameter 'max_digits'.*allowed: n, seed$"),
        ("synthetic:arithmetic?ops=add,pow", "unknown operator 'pow'; allowed: add, sub, mul, div"),
        ("synthetic:arithmetic?min_digits=3&max_digits=2", "min_digits <= max_digits"),
    ],
)
def test_bad_synthetic_sources(source, match):
    with pytest.raises(ValueError, match=match):
        load_prompt_dataset(source)


def test_written_json_array_is_valid_json(tmp_path):
    path = write_dataset(ROWS, tmp_path / "rows.json")
    assert json.loads(path.read_text()) == ROWS
