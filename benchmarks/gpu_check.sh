#!/usr/bin/env bash
# The GPU check, for a lent device machine (one H200; ~5 minutes of its 8-minute budget): the gpu-marked tests, then
# the throughput run on a random model of Qwen2.5-0.5B's shape. Prepare here, run there, commit what comes back:
#   python benchmarks/gpu_bundle.py                        # here: the wheels the device lacks -> .whl/ (~6 MiB)
#   device run, carry [".whl"], timeout_s 540:  bash benchmarks/gpu_check.sh
#   then copy $OUT's results_gpu.md and gpu_tests.log into benchmarks/ and commit them.
# Outside the device tool, OUT defaults to /tmp/thinkrl-gpu-check. CI builds the bundle, checks it installs for the
# device's Python 3.12 and dry-runs the throughput script on CPU (tests/test_gpu_bundle.py), so none of it can rot.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/thinkrl-gpu-check}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# The bundle into its own directory, ahead of the image's packages; thinkrl itself runs from the checkout.
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/thinkrl-site .whl/*.whl \
  || { echo "gpu_check: cannot install the wheels in .whl/ (run benchmarks/gpu_bundle.py here and carry .whl)" >&2; exit 2; }
export PYTHONPATH=/tmp/thinkrl-site:$PWD
"$PYTHON" -c "import deepspeed, datasets, math_verify, pydantic, train.main, train.sft, benchmarks.gpu_throughput" \
  || { echo "gpu_check: thinkrl does not import with the bundle" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_tests.log"
# 1. The gpu-marked tests: bf16 GRPO with beta > 0 under ZeRO-2 and ZeRO-3, the sampler on CUDA against HF generate,
#    log-prob memory at a 152k vocabulary, an SFT step (tests/test_gpu.py).
export DS_ACCELERATOR=cuda
timeout 300 "$PYTHON" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -o addopts="" --timeout=240 2>&1 | tee -a "$OUT/gpu_tests.log"
tests_status=${PIPESTATUS[0]}
# 2. Throughput: generation tokens/s and update MFU on the ~0.5B model.
timeout 180 "$PYTHON" benchmarks/gpu_throughput.py --out "$OUT/results_gpu.md" 2>&1 | tail -n 30
throughput_status=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests_status, throughput exit $throughput_status"
[ "$tests_status" = 0 ] && [ "$throughput_status" = 0 ]
