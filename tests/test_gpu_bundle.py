"""benchmarks/gpu_check.sh's preparation, in CI so that it cannot rot before a GPU is lent (issue 16): the wheel bundle
(benchmarks/gpu_bundle.py) builds from PyPI at this checkout's versions, fits the device tool's 64 MiB, covers every
requirement the device image lacks and installs for the device's CPython 3.12 on x86-64 Linux; the script parses; the
throughput script runs end to end (its CPU dry run, on a tiny model)."""

import subprocess
import sys

import pytest

from helpers import REPO, child_env


@pytest.mark.slow
def test_gpu_bundle_builds_and_installs_for_the_device(tmp_path):
    out = tmp_path / "whl"
    built = subprocess.run([sys.executable, "benchmarks/gpu_bundle.py", "--out", str(out)], cwd=REPO, capture_output=True,
                           text=True, timeout=900)
    assert built.returncode == 0, (built.stdout[-2000:], built.stderr[-3000:])
    wheels = sorted(p.name for p in out.glob("*.whl"))
    for name in ("deepspeed-", "datasets-", "math_verify-", "pydantic-", "pydantic_core-"):
        assert any(w.startswith(name) for w in wheels), (name, wheels)
    assert any(w.startswith("pydantic_core-") and "cp312" in w and "x86_64" in w for w in wheels), wheels
    assert sum(p.stat().st_size for p in out.glob("*.whl")) <= 64 * 2**20
    # The device's install command, for its interpreter (pip checks every wheel's tags against Python 3.12 / x86-64).
    install = subprocess.run([
        sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(tmp_path / "site"),
        "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
        *[arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64") for arg in ("--platform", tag)],
        *map(str, sorted(out.glob("*.whl"))),
    ], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (tmp_path / "site" / "deepspeed" / "__init__.py").is_file()


def test_gpu_check_script_parses():
    result = subprocess.run(["bash", "-n", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_gpu_throughput_dry_run_on_cpu(tmp_path):
    out = tmp_path / "results_gpu.md"
    result = subprocess.run([
        sys.executable, "benchmarks/gpu_throughput.py", "--shape", "tiny", "--device", "cpu", "--rows", "4", "--new-tokens", "8",
        "--prompt-tokens", "8", "--micro-batch-size", "2", "--repeats", "1", "--out", str(out),
    ], cwd=REPO, capture_output=True, text=True, timeout=300, env=child_env())
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "tokens/s" in text and "update MFU" in text and "matmul peak (measured)" in text
