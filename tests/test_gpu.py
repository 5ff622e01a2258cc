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
