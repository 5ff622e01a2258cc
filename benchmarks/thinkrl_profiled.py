"""`python -m train` with per-phase timers, for the step-time breakdown in benchmarks/grpo_vs_trl.py.

    python benchmarks/thinkrl_profiled.py PROFILE.jsonl --config X.yaml [key=value ...]

Run it from the root of the checkout to profile (grpo_vs_trl.py runs it from --baseline-root for the baseline).
Runs thinkrl's real entry point (`train.main.main`) in this process after wrapping the functions each phase calls,
and appends one JSON line per GRPO step to PROFILE.jsonl with the seconds spent in each phase. The timers add a few
`perf_counter` calls per micro-batch; the speed figures come from separate, unwrapped `python -m train` runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.getcwd())  # the checkout being profiled: its `train`, `rewards`, `data`


def main(argv: list[str]) -> int:
    import deepspeed
    import train.main as thinkrl_main
    import train.update as thinkrl_update
    from rewards import RewardCombiner

    out = open(argv[0], "a", buffering=1)
    seconds: dict[str, float] = defaultdict(float)

    def timed(fn, name=None, *, grad_only=False):
        def wrapper(*args, **kwargs):
            skip = grad_only and not torch.is_grad_enabled()  # no-grad calls are timed by their caller
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if not skip:
                    seconds[name] += time.perf_counter() - start

        return wrapper

    thinkrl_main.generate_rollouts = timed(thinkrl_main.generate_rollouts, "generation")
    thinkrl_main.sequence_logprobs = timed(thinkrl_main.sequence_logprobs, "old/ref log-prob forward")
    thinkrl_update.completion_logprobs = timed(thinkrl_update.completion_logprobs, "policy log-prob forward", grad_only=True)
    RewardCombiner.__call__ = timed(RewardCombiner.__call__, "rewards")
    deepspeed.DeepSpeedEngine.backward = timed(deepspeed.DeepSpeedEngine.backward, "backward")
    deepspeed.DeepSpeedEngine.step = timed(deepspeed.DeepSpeedEngine.step, "optimizer step")
    grpo_step = thinkrl_main.grpo_step
    step = [0]

    def profiled_step(*args, **kwargs):
        seconds.clear()
        start = time.perf_counter()
        result = grpo_step(*args, **kwargs)
        step[0] += 1
        out.write(json.dumps({"step": step[0], "time/step_inner": time.perf_counter() - start, **{f"profile/{k}": v for k, v in seconds.items()}}) + "\n")
        return result

    thinkrl_main.grpo_step = profiled_step
    return thinkrl_main.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
