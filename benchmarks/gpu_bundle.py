"""The wheels benchmarks/gpu_check.sh needs on a lent GPU machine, built here: what thinkrl imports that the device's
image lacks, for its CPython 3.12 on x86-64 Linux, at the versions this checkout is tested with.

    python benchmarks/gpu_bundle.py                 # -> .whl/ (git-ignored; name it in the device run's `carry`)
    python benchmarks/gpu_bundle.py --out /tmp/whl  # what CI does (tests/test_gpu_bundle.py), so the bundle cannot rot

The device image (its package list: benchmarks/gpu_device_packages.txt, copied from the tool library's KINDS.md) has
torch, transformers, accelerate, peft, tokenizers, numpy, pandas, pyarrow, pyyaml, tqdm and matplotlib, but not
DeepSpeed, datasets, math-verify or pydantic. DeepSpeed ships only a source distribution: it is built here into a
pure-Python wheel (its CUDA ops compile on first use there). Checks, each an error: the bundle is at most 64 MiB (the
device tool's limit on what travels), and every requirement of every wheel (Requires-Dist without extras or markers
that exclude Linux / Python 3.12) is in the bundle or on the device.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PACKAGES = ROOT / "benchmarks" / "gpu_device_packages.txt"
# What thinkrl imports (train/, rewards/, data/) or its GPU tests run with that the device lacks, and their needs.
BUNDLE = [
    "deepspeed", "hjson", "datasets", "dill", "multiprocess", "math-verify", "latex2sympy2_extended",
    "antlr4-python3-runtime", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
]
SOURCE_ONLY = {"deepspeed"}  # no wheel on PyPI: built here
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"] + [
    arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64") for arg in ("--platform", tag)
]
LIMIT_BYTES = 64 * 2**20


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(name: str) -> str:
    """name==the version installed here (the one the tests ran with)."""
    return f"{name}=={importlib.metadata.version(name)}"


def requirements(wheel: Path) -> list[str]:
    """Names a wheel requires on Linux / CPython 3.12, extras left out."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    names = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        spec, _, marker = line.removeprefix("Requires-Dist:").partition(";")
        if "extra" in marker or re.search(r"sys_platform\s*==\s*['\"](win32|darwin)", marker) or "python_version < \"3" in marker:
            continue
        names.append(normalise(re.match(r"\s*([A-Za-z0-9_.\-]+)", spec).group(1)))
    return names


def wheel_name(wheel: Path) -> str:
    return normalise(wheel.name.split("-")[0])


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.whl"):
        stale.unlink()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    binary = [pinned(name) for name in BUNDLE if name not in SOURCE_ONLY]
    subprocess.run([*pip, "download", "--no-deps", *PLATFORM, "-d", str(out), *binary], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in SOURCE_ONLY:
            subprocess.run([*pip, "download", "--no-deps", "--no-binary=:all:", "-d", tmp, pinned(name)], check=True)
            (sdist,) = Path(tmp).glob(f"{name}-*.tar.gz")
            # No build isolation: DeepSpeed's setup imports torch (installed here); DS_BUILD_OPS=0 compiles no op.
            subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(sdist)], check=True,
                           env={**os.environ, "DS_BUILD_OPS": "0"})
    return sorted(out.glob("*.whl"))


def check(wheels: list[Path]) -> list[str]:
    """Problems with the bundle: missing packages, unmet requirements, size."""
    device = {normalise(line.strip()) for line in DEVICE_PACKAGES.read_text().splitlines() if line.strip() and not line.startswith("#")}
    bundled = {wheel_name(w) for w in wheels}
    problems = [f"{name}: no wheel in the bundle" for name in BUNDLE if normalise(name) not in bundled]
    if len(bundled) != len(wheels):
        problems.append("two versions of one package: the device's install would stop")
    for wheel in wheels:
        for need in requirements(wheel):
            if need not in bundled and need not in device:
                problems.append(f"{wheel.name} needs {need}: neither in the bundle nor on the device")
    total = sum(w.stat().st_size for w in wheels)
    if total > LIMIT_BYTES:
        problems.append(f"the bundle is {total / 2**20:.1f} MiB, over the device's 64 MiB")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    args = parser.parse_args()
    wheels = build(args.out)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{sum(w.stat().st_size for w in wheels) / 2**20:7.2f} MiB  in {len(wheels)} wheels, {args.out}")
    problems = check(wheels)
    for problem in problems:
        print(f"gpu_bundle: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
