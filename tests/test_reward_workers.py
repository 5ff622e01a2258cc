"""Bounded reward workers: a per-worker memory limit and recycling after N calls (issue 12, point 4), and custom
reward modules that misbehave on import.

The module-level functions are custom rewards named ``"tests.test_reward_workers:<name>"``; they run in the pool's
worker processes and return the worker's pid, so a test can see which worker served a call.
"""

from __future__ import annotations

import mmap
import os
import time

import pytest

from rewards import RewardCombiner, RewardSpec, resolve_reward
from rewards.executor import RewardPool

HERE = "tests.test_reward_workers"
LIMIT_MB = 300  # the tests' worker memory limit; a worker at rest uses about 60 MiB
_leaked: list[bytes] = []


def pid(completions, prompts, **_):
    return [float(os.getpid())] * len(completions)


def hog(completions, prompts, **_):
    """Allocates 2x the tests' limit of private memory when the completion says "big"."""
    if completions[0] == "big":
        block = bytearray(2 * LIMIT_MB << 20)
        block[::4096] = b"x" * len(block[::4096])
    return [float(os.getpid())]


def shared_hog(completions, prompts, **_):
    """Shared anonymous memory is not private data (RLIMIT_DATA does not see it): the RSS check must catch it."""
    block = mmap.mmap(-1, 2 * LIMIT_MB << 20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    time.sleep(20)
    return [1.0]


def leak(completions, prompts, **_):
    _leaked.append(b"x" * (50 << 20))  # 50 MiB per call, never freed
    return [float(os.getpid())]


def task(name: str, completion: str = "c") -> tuple:
    return (f"{HERE}:{name}", {}, completion, "p", {})


def test_allocation_past_the_limit_fails_that_call_only():
    pool = RewardPool(1, memory_mb=LIMIT_MB)
    try:
        first, big, after = pool.run([task("hog"), task("hog", "big"), task("hog")], timeout_s=30)
    finally:
        pool.close()
    assert first.status == "ok" and after.status == "ok"
    assert big.status in ("error", "crash") and "emory" in big.error, big
    assert after.value != first.value  # the worker that hit its limit was replaced


def test_shared_memory_past_the_limit_kills_the_worker():
    pool = RewardPool(1, memory_mb=LIMIT_MB)
    try:
        start = time.monotonic()
        hogged, after = pool.run([task("shared_hog"), task("pid")], timeout_s=30)
        elapsed = time.monotonic() - start
    finally:
        pool.close()
    assert hogged.status == "crash" and "memory limit" in hogged.error, hogged
    assert after.status == "ok"
    assert elapsed < 15  # killed when it went over, not at the end of its 20 s sleep or the 30 s timeout


def test_leaking_worker_is_recycled_before_it_fails():
    pool = RewardPool(1, memory_mb=LIMIT_MB, max_calls=3)  # 3 calls leak 150 MiB: under the limit
    try:
        results = pool.run([task("leak") for _ in range(7)], timeout_s=30)
    finally:
        pool.close()
    assert [r.status for r in results] == ["ok"] * 7
    pids = [r.value for r in results]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]


def test_leak_past_the_limit_fails_one_call_then_the_run_goes_on():
    pool = RewardPool(1, memory_mb=LIMIT_MB, max_calls=0)  # never recycled by count
    try:
        results = pool.run([task("leak") for _ in range(9)], timeout_s=30)
    finally:
        pool.close()
    failed = [i for i, r in enumerate(results) if r.status != "ok"]
    assert 1 <= len(failed) <= 2, results
    first = failed[0]
    assert results[first + 1].status == "ok" and results[first + 1].value != results[first - 1].value
    assert all(r.status == "ok" for r in results[first + 1:])


def test_combiner_counts_the_memory_failure_and_goes_on():
    with RewardCombiner([RewardSpec(f"{HERE}:hog")], num_workers=1, worker_memory_mb=LIMIT_MB) as combine:
        out = combine(["a", "big", "b"], ["p"] * 3)
    assert out.failures == {f"{HERE}:hog": 1}
    assert out.per_reward[f"{HERE}:hog"][1] == 0.0 and out.per_reward[f"{HERE}:hog"][2] > 0


@pytest.mark.parametrize("kwargs", [{"worker_memory_mb": 10}, {"worker_memory_mb": -1}, {"worker_max_calls": -1}])
def test_worker_limits_are_validated_at_construction(kwargs):
    with pytest.raises(ValueError, match="worker_m"):
        RewardCombiner([RewardSpec(f"{HERE}:pid")], **kwargs)


def test_config_has_the_worker_limits():
    from train.config import RewardsConfig

    cfg = RewardsConfig()
    assert cfg.worker_memory_mb == 2048 and cfg.worker_max_calls == 1000
    with pytest.raises(ValueError, match="worker_memory_mb"):
        RewardsConfig(worker_memory_mb=-1)  # 0 < x < 256 is refused by RewardCombiner, which owns that minimum


# ------------------------------------------------------------------------------------------ custom reward imports
def test_custom_reward_module_exiting_on_import_is_a_value_error(tmp_path, monkeypatch):
    module = "import sys\nsys.exit('no GPU here')\n\ndef f(c, p, **_):\n    return []\n"
    (tmp_path / "exits_on_import.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="exits_on_import") as info:
        resolve_reward("exits_on_import:f")
    assert "SystemExit" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="exits_on_import"):
        RewardCombiner([RewardSpec("exits_on_import:f")])
