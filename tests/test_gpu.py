"""On a CUDA machine only (`pytest -m gpu`): the GPU paths that CPU CI cannot reach."""

import pytest
import torch

from helpers import SMOKE, read_jsonl, run_train

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_beta_above_zero_trains_on_the_gpu(tmp_path, zero_stage):
    """bf16 GRPO with a reference model (beta > 0): the reference must sit on the policy's GPU under every stage."""
    result = run_train([
        "--config", str(SMOKE), f"output_dir={tmp_path}", "run_name=gpu", "max_steps=2", "grpo.beta=0.04",
        f"deepspeed.zero_stage={zero_stage}", "model.dtype=bfloat16", "eval.source=null",
    ], env={"DS_ACCELERATOR": "cuda"})
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(tmp_path / "gpu" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2] and all(r["kl"] >= 0 for r in records)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("sampling", [dict(temperature=1.0, top_p=1.0, top_k=0), dict(temperature=0.7, top_p=0.9, top_k=20)])
def test_lean_sampler_on_cuda_draws_what_hf_generate_draws(tokenizer, monkeypatch, sampling):
    """On the GPU too, thinkrl's sampler (train/rollout.py) and HF `generate` draw the very same tokens from the same
    seed: same warpers, same order, same multinomial call on the same device."""
    from helpers import encode_prompts, make_tiny_model
    from train import rollout

    device = torch.device("cuda")
    model = make_tiny_model(tokenizer).to(device)
    prompts = encode_prompts(tokenizer, ["What is 12+30? <think>", "Hi", "A longer prompt, with more words in it <think>"])

    def draw():
        torch.manual_seed(3)
        return rollout.generate_rollouts(model, tokenizer, prompts, num_generations=3, device=device,
                                         sampling=rollout.SamplingParams(max_completion_length=20, **sampling))

    lean = draw()
    monkeypatch.setattr(rollout, "_uses_hf_generate", lambda *args: True)
    hf = draw()
    assert torch.equal(lean.input_ids, hf.input_ids) and lean.completion_texts == hf.completion_texts
    assert len(set(lean.completion_texts)) > 1


@needs_cuda
def test_logprob_memory_at_a_152k_vocabulary():
    """The chunked LM head at Qwen's vocabulary (151,936): 8 x 1024 completion tokens with gradients stay far below
    the naive [8, 1024, V] float32 logits (4.6 GiB), and the values equal the naive ones on a slice."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from train.logprobs import completion_logprobs

    device = torch.device("cuda")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151_936, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=512, max_position_embeddings=2048, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).to(device=device, dtype=torch.bfloat16)
    rows, width = 8, 1024
    input_ids = torch.randint(0, config.vocab_size, (rows, 64 + width), device=device)
    mask = torch.ones_like(input_ids)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    logprobs, _ = completion_logprobs(model, input_ids, mask, width, temperature=1.0, chunk_size=1024)
    logprobs.sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    naive_logits = rows * width * config.vocab_size * 4
    assert peak < naive_logits / 4, f"peak {peak / 2**30:.2f} GiB vs naive logits {naive_logits / 2**30:.2f} GiB"
    with torch.no_grad():
        logits = model(input_ids=input_ids[:1, :80], attention_mask=mask[:1, :80]).logits[:, 63:79].float()
        naive = torch.log_softmax(logits, -1).gather(-1, input_ids[:1, 64:80].unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs[:1, :16].detach().float(), naive, atol=2e-2, rtol=2e-2)


@needs_cuda
def test_sft_step_on_the_gpu(tmp_path):
    """The SFT stage (its own DeepSpeed engine) in bf16 on the GPU, then the export: `max_steps=0` is SFT only."""
    sft = ("sft={source: 'synthetic:arithmetic?n=48&seed=2&max_digits=2&ops=add', max_steps: 2, batch_size: 4, "
           "micro_batch_size: 2, lr: 1.0e-3}")
    result = run_train(["--config", str(SMOKE), sft, "max_steps=0", "eval.source=null", "model.dtype=bfloat16",
                        f"output_dir={tmp_path}", "run_name=sft"], env={"DS_ACCELERATOR": "cuda"})
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_jsonl(tmp_path / "sft" / "sft_metrics.jsonl")
    assert len(history) == 2 and all(h["num_tokens"] > 0 and h["skipped"] == 0 for h in history)
    assert (tmp_path / "sft" / "final_model" / "model.safetensors").is_file()
