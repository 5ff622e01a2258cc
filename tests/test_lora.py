"""LoRA GRPO (model.lora, train/lora.py): the reference is the base with adapters off, only adapters train, the merged
export equals the adapted model, exact resume, SFT + LoRA, and 2 ranks under ZeRO-2 equal one process."""

import sys
import zlib

import pytest
import torch

from helpers import SMOKE, TORCHRUN, initial_tiny_weights, launch_worker, make_tiny_model, read_jsonl, run_train

LORA = "model.lora={r: 4, alpha: 8, export_adapter: true}"


def adapted_tiny_model(seed=0):
    """(tokenizer, plain tiny model, a LoRA copy of it with random B, as if trained)."""
    import copy

    from train.lora import add_lora
    from train.model import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    base = make_tiny_model(tokenizer, seed=seed).eval()
    adapted = add_lora(copy.deepcopy(base), r=4, alpha=8.0, dropout=0.0, target_modules="all-linear", use_rslora=False).eval()
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    return tokenizer, base, adapted


def random_rows(tokenizer, rows=4, width=10, completion=6):
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 256, (rows, width), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0  # a left-padded prompt
    return input_ids, attention_mask, completion


def test_only_adapter_weights_train_and_the_base_is_frozen():
    from train.lora import add_lora

    from train.model import build_byte_tokenizer

    model = add_lora(make_tiny_model(build_byte_tokenizer()), r=4, alpha=8.0, dropout=0.0, target_modules=["q_proj", "v_proj"],
                     use_rslora=False)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable} == {"q_proj", "v_proj"}
    # B starts at zero: the adapted model computes exactly the base model at first.
    assert all(p.abs().sum() == 0 for name, p in model.named_parameters() if "lora_B" in name)


def test_unknown_target_module_is_a_config_error_naming_the_key():
    from train.builders import with_lora
    from train.config import ConfigError, load_config
    from train.model import build_byte_tokenizer

    cfg = load_config(SMOKE, ["model.lora={target_modules: [qproj]}"])
    with pytest.raises(ConfigError, match=r"model\.lora\.target_modules: .*qproj.*q_proj"):
        with_lora(cfg, make_tiny_model(build_byte_tokenizer()))


def test_reference_logprobs_with_adapters_disabled_equal_the_initial_model():
    from train.logprobs import sequence_logprobs
    from train.lora import adapters_disabled
    from train.micro_batches import MicroBatching

    tokenizer, base, adapted = adapted_tiny_model()
    input_ids, attention_mask, width = random_rows(tokenizer)
    kwargs = dict(micro_batching=MicroBatching(2), temperature=0.7, chunk_size=4)
    initial = sequence_logprobs(base, input_ids, attention_mask, width, **kwargs)
    with adapters_disabled(adapted) as reference:
        off = sequence_logprobs(reference, input_ids, attention_mask, width, **kwargs)
    on = sequence_logprobs(adapted, input_ids, attention_mask, width, **kwargs)
    torch.testing.assert_close(off, initial, rtol=0, atol=1e-6)
    assert (on - initial).abs().max() > 1e-2  # the adapters matter, and are back on after the block


def test_merged_generation_copy_follows_the_adapters_and_shares_the_rest(dist_single):
    """Under LoRA the engine samples from a plain model of W + s·B·A (train/lora.py::merged_model): its logits are the
    adapted model's, the weights LoRA does not touch are the same tensors (no copy), W itself never changes, and after
    an update the copy is refreshed from the new adapters."""
    from train.micro_batches import MicroBatching
    from train.update import policy_update

    from helpers import build_engine, grpo_loss, make_batch

    tokenizer, _, adapted = adapted_tiny_model()
    engine = build_engine(adapted.train(), micro_batch_size=8, grad_accum_steps=1, lr=1e-2)
    base_weights = {n: p.detach().clone() for n, p in engine.module.named_parameters() if not p.requires_grad}
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))

    def logits(model):
        with torch.no_grad():
            return model(input_ids=ids).logits

    with engine.generation_weights() as merged:
        assert merged is not engine.hf_module and not any(p.requires_grad for p in merged.parameters())
        assert merged.get_input_embeddings().weight.data_ptr() == engine.hf_module.get_input_embeddings().weight.data_ptr()
        torch.testing.assert_close(logits(merged), logits(engine.module), rtol=1e-5, atol=1e-5)
        before = logits(merged)
    policy_update(engine, make_batch(tokenizer), loss=grpo_loss(), micro_batching=MicroBatching(8), temperature=1.0,
                  logprob_chunk_size=0)
    with engine.generation_weights() as refreshed:
        assert refreshed is merged  # refreshed in place, not rebuilt
        torch.testing.assert_close(logits(refreshed), logits(engine.module), rtol=1e-5, atol=1e-5)
        assert (logits(refreshed) - before).abs().max() > 1e-4  # the update moved the adapters, and the copy with them
    for name, param in engine.module.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, base_weights[name]), f"frozen {name} moved"


def test_merged_linears_give_peft_values_and_gradients():
    """In the update, each LoRA linear computes with its merged weight (train/lora.py::merged_linears, one matmul):
    the same log-probs and the same gradients for every A and B as peft's three-matmul forward, and the class's forward
    is back after the block."""
    from train.logprobs import completion_logprobs
    from train.lora import merged_linears, merged_model

    tokenizer, _, adapted = adapted_tiny_model()
    input_ids, attention_mask, completion = random_rows(tokenizer)
    weights = torch.randn(input_ids.shape[0], completion, generator=torch.Generator().manual_seed(1))

    def logprobs_and_grads(merged_copy=None):
        adapted.zero_grad()
        if merged_copy is None:
            logprobs, _ = completion_logprobs(adapted.get_base_model(), input_ids, attention_mask, completion, temperature=1.0, chunk_size=0)
        else:
            with merged_linears(adapted, merged_copy):
                logprobs, _ = completion_logprobs(adapted.get_base_model(), input_ids, attention_mask, completion, temperature=1.0, chunk_size=0)
        (logprobs * weights).sum().backward()
        return logprobs.detach(), {n: p.grad.clone() for n, p in adapted.named_parameters() if p.requires_grad}

    expected, expected_grads = logprobs_and_grads()
    calls = []
    merged_copy = merged_model(adapted)
    merged_copy.register_forward_hook(lambda *args: calls.append(1))  # the copy is a weight store here, never called
    got, grads = logprobs_and_grads(merged_copy)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert expected_grads.keys() == grads.keys() and len(grads) > 0 and not calls
    for name, grad in grads.items():
        scale = expected_grads[name].abs().max().item()  # float rounding of W + s·B·A against peft's two paths
        assert scale > 0
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
    layer = adapted.get_base_model().model.layers[0].self_attn.q_proj
    assert "forward" not in vars(layer)  # the instance attribute is gone: peft's own forward again


def test_merged_state_dict_is_the_adapted_model():
    """W + s·B·A loaded into a plain transformers model gives the adapted model's logits, without peft."""
    from transformers import AutoModelForCausalLM

    from train.lora import lora_scalings, merged_state_dict

    tokenizer, base, adapted = adapted_tiny_model()
    merged = merged_state_dict(adapted.state_dict(), lora_scalings(adapted))
    assert set(merged) == set(base.state_dict())
    plain = AutoModelForCausalLM.from_config(base.config).eval()
    plain.load_state_dict(merged)
    input_ids, attention_mask, _ = random_rows(tokenizer)
    with torch.no_grad():
        expected = adapted(input_ids=input_ids, attention_mask=attention_mask).logits
        got = plain(input_ids=input_ids, attention_mask=attention_mask).logits
        unmerged = base(input_ids=input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (unmerged - expected).abs().max() > 1e-2


COMMON = ["eval.source=null", "max_steps=4", "checkpoint.every=2", "optim.lr=3e-2", "grpo.beta=0.04", LORA,
          "rewards.functions=[{name: 'tests.fault_rewards:alternating'}]"]


def checkpoint_module(run_dir, step):
    (states,) = (run_dir / "checkpoints" / f"step_{step:08d}").rglob("mp_rank_00_model_states.pt")
    return torch.load(states, weights_only=False)["module"]


@pytest.mark.slow
def test_lora_run_trains_adapters_only_exports_merged_and_resumes_exactly(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from train.config import load_config

    from helpers import assert_same_run

    common = ["--config", str(SMOKE), *COMMON, f"output_dir={tmp_path}"]
    straight = run_train([*common, "run_name=straight"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = run_train([*common, "run_name=split", "max_steps=2"])
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train([*common, "run_name=split", "checkpoint.resume=auto"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout
    assert_same_run(tmp_path / "straight", tmp_path / "split")

    run_dir = tmp_path / "straight"
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: policy == reference (B = 0)
    assert max(r["kl"] for r in records) > 0  # the adapters moved the policy away from the base
    cfg = load_config(SMOKE)
    initial = initial_tiny_weights(cfg.model.tiny.model_dump(), cfg.seed)
    module = checkpoint_module(run_dir, 4)
    adapters = {k: v for k, v in module.items() if ".lora_" in k}
    assert adapters and all(k.split(".lora_")[0] for k in adapters)
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if ".lora_B." in k), "no adapter trained"
    base = {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v for k, v in module.items() if ".lora_" not in k}
    for name, value in initial.items():
        torch.testing.assert_close(base[name], value, rtol=0, atol=0, msg=f"base weight {name} changed")

    exported = dict(AutoModelForCausalLM.from_pretrained(run_dir / "final_model").named_parameters())
    moved = [name for name, value in initial.items() if not torch.allclose(exported[name], value)]
    assert moved and all(name.endswith("proj.weight") for name in moved), moved  # the merged adapters, nothing else
    # The adapter alone, loaded onto the base model with peft, is the same model as final_model.
    base_model = AutoModelForCausalLM.from_pretrained(run_dir / "final_model")  # shape donor
    base_model.load_state_dict(initial, strict=False)
    merged = PeftModel.from_pretrained(base_model, run_dir / "final_adapter").merge_and_unload()
    for name, value in merged.named_parameters():
        torch.testing.assert_close(value, exported[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_sft_with_lora_then_grpo_regularises_towards_the_sft_model(tmp_path):
    """SFT trains an adapter that is merged before GRPO, whose fresh adapters start from the SFT model: the step-1 KL to
    the reference (adapters off) is 0, which it would not be if the reference were the model before SFT."""
    sft = ("sft={source: 'synthetic:arithmetic?n=48&seed=2&max_digits=2&ops=add', max_steps: 3, batch_size: 4, "
           "micro_batch_size: 2, lr: 3.0e-2, warmup_steps: 0}")
    result = run_train(["--config", str(SMOKE), *COMMON, sft, "max_steps=1", f"output_dir={tmp_path}", "run_name=sft_lora"])
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "sft_lora"
    sft_history = read_jsonl(run_dir / "sft_metrics.jsonl")
    assert len(sft_history) == 3 and sft_history[-1]["loss"] < sft_history[0]["loss"]
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert records[-1]["step"] == 1 and records[-1]["kl"] == pytest.approx(0.0, abs=1e-6)
    # The SFT adapter is in the base weights now: they differ from the initial model's.
    from train.config import load_config

    cfg = load_config(SMOKE)
    initial = initial_tiny_weights(cfg.model.tiny.model_dump(), cfg.seed)
    module = checkpoint_module(run_dir, 1)
    base = {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v for k, v in module.items() if ".lora_" not in k}
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], initial["model.layers.0.self_attn.q_proj.weight"])
    torch.testing.assert_close(base["model.embed_tokens.weight"], initial["model.embed_tokens.weight"], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_lora_two_ranks_zero2_and_zero3_equal_one_process(tmp_path):
    """tests/equivalence_worker.py with LoRA adapters: same losses, gradient norms and final adapters on 2 ranks under
    ZeRO-2 and ZeRO-3 as in one process with the same global batch; the base weights never move."""
    from helpers import assert_same_training

    results = {**launch_worker([sys.executable], tmp_path / "world1", ["0:8:lora"]),
               **launch_worker(TORCHRUN, tmp_path / "world2", ["2:4:lora", "3:1:lora"])}
    reference = results["world1/0:8:lora"]
    for name, final in reference["weights"].items():
        if ".lora_" in name:
            assert not torch.equal(final, reference["initial"][name]), f"{name} did not train"
        else:
            assert torch.equal(final, reference["initial"][name]), f"base weight {name} moved"
    trained = {k: v for k, v in reference["weights"].items() if ".lora_" in k}
    for case in ("world2/2:4:lora", "world2/3:1:lora"):
        run = results[case]
        assert_same_training({**run, "weights": {k: run["weights"][k] for k in trained}},
                             {**reference, "weights": trained})


@pytest.mark.slow
@pytest.mark.multiprocess
def test_lora_zero3_two_ranks_cli_exports_the_merged_model(tmp_path):
    """The trainer end to end with LoRA under ZeRO-3 on 2 ranks (torchrun), beta > 0: the export gathers the shards
    and merges the adapters; only the adapted projections differ from the initial model."""
    from transformers import AutoModelForCausalLM

    from train.config import load_config

    result = run_train(["--config", str(SMOKE), *COMMON, "max_steps=2", "deepspeed.zero_stage=3", f"output_dir={tmp_path}",
                        "run_name=z3"], launcher=TORCHRUN)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(tmp_path / "z3" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2] and records[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    cfg = load_config(SMOKE)
    initial = initial_tiny_weights(cfg.model.tiny.model_dump(), cfg.seed)
    exported = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "z3" / "final_model").named_parameters())
    moved = [name for name, value in initial.items() if not torch.allclose(exported[name], value)]
    assert moved and all(name.endswith("proj.weight") for name in moved), moved
    assert (tmp_path / "z3" / "final_adapter" / "adapter_config.json").is_file()
