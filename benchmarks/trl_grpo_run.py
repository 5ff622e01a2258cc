"""One TRL GRPOTrainer run for benchmarks/grpo_vs_trl.py (the baseline side of the comparison).

Reads a JSON spec written by grpo_vs_trl.py (the same model directory, prompts, rewards and hyper-parameters that
the thinkrl run gets), trains for `grpo_steps * num_iterations` optimiser steps on CPU and appends one JSON line per
optimiser step to `log_file`: TRL's logged metrics plus, with `profile`, seconds spent per phase in that step.

    python benchmarks/trl_grpo_run.py SPEC.json

TRL counts optimiser steps; with num_iterations = mu, one GRPO step (a generation batch and its mu updates) is mu of
them, which is what thinkrl calls a step. The harness converts.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `rewards`


class PhaseTimer:
    """Seconds per named phase, reset at every optimiser step."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name, fn, *, when=None):
        """`fn` timed under `name` (or under when() -> name, None = not timed)."""

        def timed(*args, **kwargs):
            label = name if when is None else when()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if label is not None:
                    self.seconds[label] += time.perf_counter() - start

        return timed


def trl_reward(name: str):
    """A thinkrl reward as a TRL reward function. thinkrl's RewardCombiner scores a non-applicable sample (None) as
    `rewards.on_error` = 0.0; TRL would turn None into NaN and drop it from the weighted sum, which is the same total."""
    from rewards import resolve_reward

    fn = resolve_reward(name)

    def reward(completions, prompts=None, answer=None, **_):
        return [0.0 if value is None else float(value) for value in fn(completions, prompts, answer=answer)]

    reward.__name__ = name
    return reward


def main(spec_path: str) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    spec = json.loads(Path(spec_path).read_text())
    hp = spec["hparams"]
    torch.manual_seed(spec["seed"])
    rows = [json.loads(line) for line in Path(spec["prompts_file"]).read_text().splitlines()]
    dataset = Dataset.from_list(rows)  # columns: prompt (rendered r1_zero text), answer
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    completions_per_step = hp["prompts_per_step"] * hp["num_generations"]
    args = GRPOConfig(
        output_dir=spec["output_dir"],
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=spec["seed"],
        model_init_kwargs={"dtype": "float32", "attn_implementation": spec["attn_implementation"]},
        # One optimiser step = the B*G completions of one generation batch, in micro-batches, as in thinkrl.
        per_device_train_batch_size=hp["micro_batch_size"],
        gradient_accumulation_steps=completions_per_step // hp["micro_batch_size"],
        generation_batch_size=completions_per_step,
        num_generations=hp["num_generations"],
        max_completion_length=hp["max_completion_length"],
        temperature=hp["temperature"],
        top_p=hp["top_p"],
        top_k=hp["top_k"],
        beta=hp["beta"],
        # thinkrl's KL term is plain k3 (train/loss.py). TRL >= 1.x defaults to multiplying it by the importance
        # ratio (DeepSeek-V3.2 bias correction), which changes the KL gradient whenever beta > 0, even on-policy.
        use_bias_correction_kl=False,
        num_iterations=hp["num_iterations"],
        loss_type="dapo",
        scale_rewards="group",
        epsilon=hp["epsilon"],
        epsilon_high=hp["epsilon_high"],
        learning_rate=hp["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=hp["adam_betas"][0],
        adam_beta2=hp["adam_betas"][1],
        adam_epsilon=hp["adam_eps"],
        weight_decay=hp["weight_decay"],
        max_grad_norm=hp["max_grad_norm"],
        gradient_checkpointing=False,
        reward_weights=[weight for _, weight in spec["rewards"]],
        max_steps=spec["grpo_steps"] * hp["num_iterations"],
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
    )
    log = open(spec["log_file"], "a", buffering=1)
    timer = PhaseTimer()
    step_start = [0.0]

    class StepLog(TrainerCallback):
        pending: dict = {}

        def on_step_begin(self, args, state, control, **kwargs):
            timer.seconds.clear()
            step_start[0] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            record = {"step": state.global_step, "wall": time.time(), "time/step_inner": time.perf_counter() - step_start[0]}
            if spec["profile"]:
                record.update({f"profile/{k}": v for k, v in timer.seconds.items()})
            self.pending = record

        def on_log(self, args, state, control, logs=None, **kwargs):
            record = self.pending or {"step": state.global_step, "summary": True}  # the end-of-training summary
            record.update({k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))})
            log.write(json.dumps(record) + "\n")
            self.pending = {}

    peft_config = None
    if spec.get("lora"):  # TRL's LoRA route: a peft config, the reference is the model with adapters disabled
        from peft import LoraConfig

        lora = spec["lora"]
        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                 target_modules=lora["target_modules"], bias="none", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(
        model=spec["model_dir"],
        reward_funcs=[trl_reward(name) for name, _ in spec["rewards"]],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepLog()],
        peft_config=peft_config,
    )
    if spec["profile"]:
        trainer._generate_single_turn = timer.wrap("generation", trainer._generate_single_turn)
        trainer._calculate_rewards = timer.wrap("rewards", trainer._calculate_rewards)
        trainer._get_per_token_logps_and_entropies = timer.wrap(
            "", trainer._get_per_token_logps_and_entropies,
            when=lambda: "policy log-prob forward" if torch.is_grad_enabled() else "old/ref log-prob forward",
        )
        trainer.accelerator.backward = timer.wrap("backward", trainer.accelerator.backward)
        trainer.accelerator.clip_grad_norm_ = timer.wrap("optimizer step", trainer.accelerator.clip_grad_norm_)
        torch.optim.AdamW.step = timer.wrap("optimizer step", torch.optim.AdamW.step)
    trainer.train()
    log.close()


if __name__ == "__main__":
    main(sys.argv[1])
