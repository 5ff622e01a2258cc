"""YAML loading, key.sub=value overrides, and the errors that name file, key and allowed values."""

from pathlib import Path

import pytest

from train.config import ConfigError, config_to_dict, load_config

REPO = Path(__file__).resolve().parents[1]
MINIMAL = "model: {tiny: {}}\ndata: {source: 'synthetic:arithmetic'}\n"


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_config_loads():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ has no YAML files"
    for path in configs:
        load_config(path)


def test_defaults_and_overrides_with_types(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, ["grpo.beta=0.04", "rollout.num_generations=8", "grpo.epsilon_high=0.28", "log.wandb.tags=[a, b]", "optim.micro_batch_size=8"])
    assert cfg.grpo.beta == 0.04 and cfg.rollout.num_generations == 8
    assert cfg.grpo.epsilon_high == 0.28 and load_config(path).grpo.epsilon_high == cfg.grpo.epsilon
    assert cfg.log.wandb.tags == ["a", "b"]
    assert config_to_dict(cfg)["grpo"]["beta"] == 0.04


@pytest.mark.parametrize(
    "yaml_text, overrides, expected",
    [
        (MINIMAL + "grpo: {loss_type: ppo}\n", [], ["exp.yaml: grpo.loss_type:", "'grpo', 'bnpo', 'dr_grpo' or 'dapo'", "got 'ppo'"]),
        (MINIMAL, ["grpo.loss_type=ppo"], ["command line: grpo.loss_type:", "'dapo'"]),
        (MINIMAL + "rollout: {temperature: -1}\n", [], ["exp.yaml: rollout.temperature:", "greater than 0", "got -1"]),
        (MINIMAL + "rollout: {tempreature: 1}\n", [], ["rollout.tempreature: unknown key; allowed:", "temperature"]),
        (MINIMAL, ["optim.lr=fast"], ["command line: optim.lr:", "valid number", "'fast'"]),
        (MINIMAL, ["deepspeed.zero_stage=4"], ["deepspeed.zero_stage:", "0, 1, 2 or 3"]),
        (MINIMAL, ["rollout.num_generations=1"], ["rollout.num_generations:", "greater than or equal to 2"]),
        ("data: {source: x.jsonl}\n", [], ["exp.yaml: model: required key is missing"]),
        (MINIMAL + "model: {tiny: {}, name_or_path: /x}\n", [], ["exactly one of model.name_or_path"]),
        (MINIMAL + "rollout: {prompts_per_step: 3, num_generations: 3}\noptim: {micro_batch_size: 4}\n", [], ["divisible by optim.micro_batch_size = 4"]),
        (MINIMAL + "deepspeed: {zero_stage: 2, offload_param: true}\n", [], ["offload_param needs zero_stage 3"]),
        (MINIMAL, ["max_steps=0"], ["max_steps=0 (no GRPO) needs an sft section"]),
        (MINIMAL, ["data.prefill_answer=true"], ["data.prefill_answer:", "set data.prefill_think=false"]),
        (MINIMAL + "sft: {source: x.jsonl}\n", ["data.prefill_answer=true", "data.prefill_think=false"],
         ["data.prefill_answer:", "sft section"]),
        (MINIMAL + "sft: {carry_slip: 0.5}\n", [], ["exp.yaml: sft.source: required key is missing"]),
        (MINIMAL + "sft: {source: x.jsonl, carry_slip: 1.5}\n", [], ["exp.yaml: sft.carry_slip:", "less than or equal to 1"]),
        (MINIMAL + "sft: {source: x.jsonl, batch_size: 6, micro_batch_size: 4}\n", [], ["sft: ", "batch_size=6 must be divisible by micro_batch_size=4"]),
        (MINIMAL + "sft: {source: x.jsonl, pakcing: true}\n", [], ["sft.pakcing: unknown key; allowed:", "packing"]),
    ],
)
def test_bad_values_name_file_key_and_allowed(tmp_path, yaml_text, overrides, expected):
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    for fragment in expected:
        assert fragment in str(info.value)


def test_sft_section_is_optional_and_typed(tmp_path):
    assert load_config(write(tmp_path, MINIMAL)).sft is None
    cfg = load_config(write(tmp_path, MINIMAL + "sft: {source: 'synthetic:arithmetic?n=10'}\n"), ["sft.lr=3e-4", "max_steps=0"])
    assert cfg.sft.source == "synthetic:arithmetic?n=10" and cfg.sft.lr == 3e-4 and cfg.max_steps == 0
    assert cfg.sft.packing is True and cfg.sft.completion_column == "completion"
    assert config_to_dict(cfg)["sft"]["lr"] == 3e-4


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not of the form key.sub=value"):
        load_config(write(tmp_path, MINIMAL), ["--lr", "3"])
    with pytest.raises(ConfigError, match="'rollout' is a value, not a section"):
        load_config(write(tmp_path, MINIMAL + "rollout: 3\n"), ["rollout.temperature=1"])


def test_use_bias_correction_kl_defaults_to_plain_k3(tmp_path):
    # TRL 1.16 defaults to True; thinkrl keeps DeepSeekMath's plain k3 unless asked (README "Where thinkrl differs").
    path = write(tmp_path, MINIMAL)
    assert load_config(path).grpo.use_bias_correction_kl is False
    cfg = load_config(path, ["grpo.use_bias_correction_kl=true", "grpo.beta=0.04"])
    assert cfg.grpo.use_bias_correction_kl is True and config_to_dict(cfg)["grpo"]["use_bias_correction_kl"] is True
    with pytest.raises(ConfigError, match="grpo.use_bias_correction_kl"):
        load_config(path, ["grpo.use_bias_correction_kl=maybe"])
