"""thinkrl: GRPO for reasoning with rule-based rewards, trained through DeepSpeed.

Algorithm (GRPO, DeepSeekMath arXiv:2402.03300 Alg. 1; DeepSeek-R1 arXiv:2501.12948), one optimiser step per loop:
    1. take B prompts (disjoint per rank) and sample G completions each with the current policy;
    2. score every completion with weighted rule-based rewards;
    3. advantage = (reward - group mean) / group std, over the G completions of the same prompt;
    4. (num_iterations > 1) keep the sampling policy's log-probs as pi_old; (beta > 0) the reference's for k3 KL;
    5. num_iterations times: minimise the clipped surrogate over micro-batches (train/update.py, train/loss.py).
Deliberate deviations from the paper: no KL term by default (beta = 0, as DAPO and Dr. GRPO argue); asymmetric clip
(epsilon_high); the loss normaliser is selectable (loss_type); rewards of a whole step are gathered over ranks before
advantages are computed, so group statistics never depend on how prompts were split across ranks.

Launch (from the repo root):
    python -m train --config configs/quickstart.yaml [key.sub=value ...]
    torchrun --nproc_per_node 2 -m train --config configs/quickstart.yaml deepspeed.zero_stage=2
    deepspeed --num_gpus 2 --module train --config configs/X.yaml
    accelerate launch --config_file launch/accelerate.yaml --num_processes 2 -m train --config configs/X.yaml
    sbatch --nodes 2 launch/slurm.sbatch configs/X.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from data import PromptSampler, load_prompt_dataset, render_prompt
from data.traces import load_sft_rows
from rewards import RewardCombiner, RewardSpec
from train.advantages import group_advantages, zero_std_fraction
from train.batch import TrainBatch
from train.checkpoint import (
    CheckpointError, capture_rng, export_policy, load_checkpoint, resolve_resume, restore_rng, save_checkpoint,
)
from train.config import ConfigError, DataConfig, TrainConfig, config_to_dict, load_config
from train.distributed import DistInfo, LauncherError, all_gather_tensor, all_reduce_sum, destroy, init_distributed
from train.evaluate import evaluate, metrics_from_sums
from train.model import (
    ModelLoadError, build_byte_tokenizer, build_engine, build_reference_engine, build_tiny_model, deepspeed_config,
    frozen_copy, load_pretrained,
)
from train.preemption import PreemptionFlag
from train.report import ReportError, make_report
from train.rollout import generate_rollouts, generation_model
from train.sft import SFTResult, sft_stage
from train.tracking import RunTracker, make_run_dir
from train.update import policy_update, sequence_logprobs


class TrainingAborted(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps in a row); the message says why."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="thinkrl", description="GRPO training. Extra `key.sub=value` arguments override the YAML.")
    parser.add_argument("--config", required=True, help="YAML experiment file, e.g. configs/quickstart.yaml")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # appended by the deepspeed launcher
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. rollout.temperature=0.8")
    return parser.parse_intermixed_args(argv)


def build_policy(cfg: TrainConfig):
    """(model, tokenizer) from a directory or, for `model.tiny`, built from a config with a local byte tokenizer."""
    if cfg.model.tiny is not None:
        tokenizer = build_byte_tokenizer()
        model = build_tiny_model(
            tokenizer, **cfg.model.tiny.model_dump(), dtype=cfg.model.dtype,
            attn_implementation=cfg.model.attn_implementation, seed=cfg.seed,
        )
    else:
        model, tokenizer = load_pretrained(
            cfg.model.name_or_path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
            trust_remote_code=cfg.model.trust_remote_code,
        )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # training forward; generate() turns the cache on for itself
    return model, tokenizer


def load_prompts(data: DataConfig, tokenizer, *, source: str, split: str, limit: int | None, min_prompts: int, key: str):
    """Dataset with a rendered `text` column; prompts over data.max_prompt_length tokens are dropped (and counted).
    `key` names the config entry of `source` in errors (data.source or eval.source)."""
    try:
        dataset = load_prompt_dataset(
            source, split=split, prompt_column=data.prompt_column, answer_column=data.answer_column,
            keep_columns=data.keep_columns, data_format=data.data_format, limit=limit, subset=data.subset,
        )
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
        raise ConfigError(f"{key}: {exc}") from None
    texts = [
        render_prompt(q, tokenizer, template=data.template, system_prompt=data.system_prompt, prefill_think=data.prefill_think)
        for q in dataset["prompt"]
    ]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=data.template != "chat")["input_ids"]]
    too_long = [i for i, n in enumerate(lengths) if n > data.max_prompt_length]
    if too_long and data.on_long_prompt == "error":
        first = too_long[0]
        raise ConfigError(
            f"{key}: {source}: {len(too_long)} of {len(lengths)} prompts are longer than data.max_prompt_length="
            f"{data.max_prompt_length} tokens (row {first}: {lengths[first]} tokens); raise the limit or set "
            f"data.on_long_prompt=drop"
        )
    keep = [i for i, n in enumerate(lengths) if n <= data.max_prompt_length]
    dataset = dataset.add_column("text", texts).select(keep)
    if len(dataset) < min_prompts:
        raise ConfigError(
            f"{key}: {source}: {len(dataset)} prompts fit data.max_prompt_length={data.max_prompt_length} "
            f"(longest is {max(lengths, default=0)} tokens); at least {min_prompts} are needed"
        )
    return dataset, len(lengths) - len(keep)


def load_train_and_eval(cfg: TrainConfig, tokenizer, rank: int, world: int):
    """Training prompts minus any that appear in the eval set, this rank's disjoint shard of the eval set, and the
    rendered eval prompts (which SFT data must not contain either)."""
    eval_rows, held_out = None, set()
    train_set, dropped = load_prompts(cfg.data, tokenizer, source=cfg.data.source, split=cfg.data.split, limit=cfg.data.limit,
                                      min_prompts=cfg.rollout.prompts_per_step, key="data.source")
    if cfg.eval.source is not None:
        eval_set, _ = load_prompts(cfg.data, tokenizer, source=cfg.eval.source, split=cfg.eval.split, limit=cfg.eval.limit,
                                   min_prompts=world, key="eval.source")
        held_out = set(eval_set["text"])
        train_set = train_set.filter(lambda row: row["text"] not in held_out)
        if len(train_set) < cfg.rollout.prompts_per_step:
            raise ConfigError(f"eval.source: {cfg.eval.source}: it contains nearly all training prompts of data.source")
        # Equal shard sizes: with synced generation (ZeRO-3, no gather) every rank must make the same calls.
        usable = len(eval_set) - len(eval_set) % world
        eval_rows = eval_set.select(range(rank, usable, world)).to_dict()
    return train_set, dropped, eval_rows, held_out


def cold_start(cfg: TrainConfig, model, tokenizer, dist_info: DistInfo, ds_overrides: dict | None, held_out: set[str]):
    """The `sft` section: fine-tune `model` on prompt/completion rows before GRPO (train/sft.py). Rows whose rendered
    prompt is in the eval set are dropped, so held-out accuracy stays held out. Returns (fine-tuned model, SFTResult)."""
    sft, data = cfg.sft, cfg.data
    try:
        rows = load_sft_rows(sft.source, split=sft.split, prompt_column=sft.prompt_column, completion_column=sft.completion_column,
                             data_format=sft.data_format, limit=sft.limit, subset=sft.subset, carry_slip=sft.carry_slip, seed=cfg.seed)
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
        raise ConfigError(f"sft.source: {exc}") from None
    render = dict(template=data.template, system_prompt=data.system_prompt, prefill_think=data.prefill_think)
    rows = [row for row in rows if render_prompt(row["prompt"], tokenizer, **render) not in held_out]
    if not rows:
        raise ConfigError(f"sft.source: {sft.source}: no rows left after removing the eval prompts")
    if sft.batch_size % (dist_info.world_size * sft.micro_batch_size):
        raise ConfigError(f"sft.batch_size={sft.batch_size} must be divisible by the world size {dist_info.world_size} x "
                          f"sft.micro_batch_size={sft.micro_batch_size}")
    try:
        return sft_stage(
            model, tokenizer, rows, **render, max_length=sft.max_length, packing=sft.packing, max_steps=sft.max_steps,
            epochs=sft.epochs, batch_size=sft.batch_size, micro_batch_size=sft.micro_batch_size, lr=sft.lr,
            weight_decay=sft.weight_decay, betas=cfg.optim.adam_betas, eps=cfg.optim.adam_eps, warmup_steps=sft.warmup_steps,
            lr_scheduler=sft.lr_scheduler, max_grad_norm=cfg.optim.max_grad_norm, seed=cfg.seed, zero_stage=cfg.deepspeed.zero_stage,
            dtype=cfg.model.dtype, world_size=dist_info.world_size, rank=dist_info.rank,
            offload_optimizer=cfg.deepspeed.offload_optimizer, offload_param=cfg.deepspeed.offload_param,
            ds_overrides=ds_overrides, chunk_size=cfg.optim.logprob_chunk_size, show_progress=dist_info.is_main,
        )
    except ValueError as exc:  # no example fits sft.max_length, an empty rendered prompt
        raise ConfigError(f"sft: {sft.source}: {exc}") from None


def build_rewards(cfg: TrainConfig) -> tuple[RewardCombiner, list[str], str]:
    """(combiner, reward names, the reward that defines accuracy); unknown names or options are a ConfigError."""
    specs = [RewardSpec(name=r.name, weight=r.weight, kwargs=r.kwargs) for r in cfg.rewards.functions]
    try:
        combiner = RewardCombiner(specs, timeout_s=cfg.rewards.timeout_s, num_workers=cfg.rewards.num_workers, on_error=cfg.rewards.on_error)
    except ValueError as exc:
        raise ConfigError(f"rewards.functions: {exc}") from None
    names = [s.name for s in specs]
    accuracy_reward = cfg.rewards.accuracy_reward or names[0]
    if accuracy_reward not in names:
        raise ConfigError(f"rewards.accuracy_reward: {accuracy_reward!r} is not one of rewards.functions {names}")
    return combiner, names, accuracy_reward


@dataclass
class Run:
    """Everything the step loop touches, built once by `setup`."""

    engine: object
    reference: object | None
    tokenizer: object
    dataset: object
    sampler: PromptSampler
    combiner: RewardCombiner
    tracker: RunTracker
    run_dir: Path
    reward_names: list[str]
    accuracy_reward: str
    start_step: int
    eval_rows: dict[str, list] | None  # this rank's shard of the held-out set, with a rendered `text` column
    sft: SFTResult | None  # the SFT stage of this run (None: no sft section, or resumed past it)


def setup(cfg: TrainConfig, config_path: str, dist_info: DistInfo) -> Run:
    """Validate what can only be checked at run time, build model, data, rewards and engine, resume if asked."""
    rank, world = dist_info.rank, dist_info.world_size
    if cfg.model.dtype == "float16" and dist_info.device.type == "cpu":
        raise ConfigError("model.dtype: float16 needs a GPU (DeepSpeed's CPU accelerator has no fp16); use float32 or bfloat16 on CPU")
    ds_overrides = _read_json(cfg.deepspeed.config_file)
    file_stage = (ds_overrides or {}).get("zero_optimization", {}).get("stage", cfg.deepspeed.zero_stage)
    if file_stage != cfg.deepspeed.zero_stage:
        raise ConfigError(f"deepspeed.config_file: {cfg.deepspeed.config_file} sets zero_optimization.stage={file_stage} but "
                          f"deepspeed.zero_stage={cfg.deepspeed.zero_stage}; set deepspeed.zero_stage={file_stage} too")
    if cfg.rollout.prompts_per_step % world:
        raise ConfigError(f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} must be divisible by the world size {world}")
    prompts_per_rank = cfg.rollout.prompts_per_step // world
    completions_per_rank = prompts_per_rank * cfg.rollout.num_generations
    if completions_per_rank % cfg.optim.micro_batch_size:
        raise ConfigError(f"optim.micro_batch_size={cfg.optim.micro_batch_size} must divide the {completions_per_rank} completions per rank")
    combiner, reward_names, accuracy_reward = build_rewards(cfg)  # names resolved before anything heavy is built
    run_dir = make_run_dir(cfg.output_dir, cfg.run_name, Path(config_path).stem)
    checkpoint_dir = resolve_resume(cfg.checkpoint.resume, run_dir)

    model, tokenizer = build_policy(cfg)
    dataset, dropped, eval_rows, held_out = load_train_and_eval(cfg, tokenizer, rank, world)
    sft_result = None
    if cfg.sft is not None and checkpoint_dir is None:  # a checkpoint already holds the fine-tuned weights
        model, sft_result = cold_start(cfg, model, tokenizer, dist_info, ds_overrides, held_out)
    sampler = PromptSampler(len(dataset), prompts_per_rank, seed=cfg.seed, rank=rank, world_size=world)
    reference = frozen_copy(model) if cfg.grpo.beta > 0 else None
    ds_config = deepspeed_config(
        zero_stage=cfg.deepspeed.zero_stage, micro_batch_size=cfg.optim.micro_batch_size,
        grad_accum_steps=completions_per_rank // cfg.optim.micro_batch_size, world_size=world,
        max_grad_norm=cfg.optim.max_grad_norm, dtype=cfg.model.dtype, offload_optimizer=cfg.deepspeed.offload_optimizer,
        offload_param=cfg.deepspeed.offload_param, overrides=ds_overrides,
    )
    engine = build_engine(
        model, ds_config, lr=cfg.optim.lr, betas=cfg.optim.adam_betas, eps=cfg.optim.adam_eps,
        weight_decay=cfg.optim.weight_decay, warmup_steps=cfg.optim.warmup_steps,
        total_steps=cfg.max_steps * cfg.grpo.num_iterations, schedule=cfg.optim.lr_scheduler,
    )
    if reference is not None:
        reference = build_reference_engine(reference, zero_stage=cfg.deepspeed.zero_stage, dtype=cfg.model.dtype, world_size=world)
    torch.manual_seed(cfg.seed * 1000 + rank)  # sampling differs per rank, reproducible per seed
    start_step, wandb_run_id = 0, None
    if checkpoint_dir is not None:
        state = load_checkpoint(engine, checkpoint_dir, rank=rank, world_size=world)
        start_step, wandb_run_id = state["step"], state.get("wandb_run_id")
        sampler.load_state_dict(state["sampler"])
        restore_rng(state["rng"])
    wandb_cfg = cfg.log.wandb
    tracker = RunTracker(
        run_dir, config_to_dict(cfg), enabled=dist_info.is_main, wandb_mode=wandb_cfg.mode, wandb_project=wandb_cfg.project,
        wandb_entity=wandb_cfg.entity, wandb_name=wandb_cfg.name, wandb_tags=wandb_cfg.tags,
        resume_step=start_step if checkpoint_dir is not None else None, wandb_run_id=wandb_run_id,
    )
    if dist_info.is_main:
        resumed = f" | resumed from {checkpoint_dir} at step {start_step}" if checkpoint_dir is not None else ""
        print(f"thinkrl: run directory {run_dir} | {len(dataset)} prompts ({dropped} over max_prompt_length dropped) | "
              f"world size {world} | ZeRO-{cfg.deepspeed.zero_stage}{resumed}", flush=True)
    return Run(engine, reference, tokenizer, dataset, sampler, combiner, tracker, run_dir, reward_names, accuracy_reward,
               start_step, eval_rows, sft_result)


def grpo_step(run: Run, cfg: TrainConfig, dist_info: DistInfo) -> tuple[dict[str, float], list[dict]]:
    """One GRPO step: sample groups, score, advantages, (old/ref log-probs), num_iterations updates. Returns
    (metrics over all ranks, a few of this rank's samples)."""
    G, rank = cfg.rollout.num_generations, dist_info.rank
    t_start = time.perf_counter()
    rows = run.dataset.select(run.sampler.next_indices()).to_dict()
    with generation_model(run.engine, zero_stage=cfg.deepspeed.zero_stage, gather_zero3_params=cfg.rollout.gather_zero3_params) as policy:
        rollout = generate_rollouts(
            policy, run.tokenizer, rows["text"], num_generations=G, max_completion_length=cfg.rollout.max_completion_length,
            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, device=dist_info.device,
            add_special_tokens=cfg.data.template != "chat",
            synced_gpus=cfg.deepspeed.zero_stage == 3 and dist_info.world_size > 1,  # see train/rollout.py::generation_model
        )
    t_rollout = time.perf_counter()
    columns = {name: [v for v in values for _ in range(G)] for name, values in rows.items() if name != "text"}
    columns["completion_length"] = rollout.completion_lengths.tolist()
    scored = run.combiner(rollout.completion_texts, rollout.prompt_texts, columns)
    rewards = torch.tensor(scored.total, dtype=torch.float32)  # [N]
    # Advantages from the global batch: groups never straddle ranks, but the "batch" std needs every reward.
    all_rewards = all_gather_tensor(rewards)
    n_local = rewards.numel()
    advantages = group_advantages(all_rewards, G, scale=cfg.grpo.scale_rewards)[rank * n_local : (rank + 1) * n_local]
    t_rewards = time.perf_counter()
    logprob_kwargs = dict(micro_batch_size=cfg.optim.micro_batch_size, temperature=cfg.rollout.temperature, chunk_size=cfg.optim.logprob_chunk_size)
    L = rollout.completion_mask.shape[1]
    batch = TrainBatch(
        input_ids=rollout.input_ids, attention_mask=rollout.attention_mask, completion_mask=rollout.completion_mask.float(),
        advantages=advantages.to(dist_info.device),
        old_logprobs=sequence_logprobs(run.engine, rollout.input_ids, rollout.attention_mask, L, **logprob_kwargs) if cfg.grpo.num_iterations > 1 else None,
        ref_logprobs=sequence_logprobs(run.reference, rollout.input_ids, rollout.attention_mask, L, **logprob_kwargs) if run.reference is not None else None,
    )
    skipped = 0
    for _ in range(cfg.grpo.num_iterations):
        update = policy_update(
            run.engine, batch, micro_batch_size=cfg.optim.micro_batch_size, world_size=dist_info.world_size,
            temperature=cfg.rollout.temperature, logprob_chunk_size=cfg.optim.logprob_chunk_size, loss_type=cfg.grpo.loss_type,
            epsilon=cfg.grpo.epsilon, epsilon_high=cfg.grpo.clip_high, beta=cfg.grpo.beta,
            max_completion_length=cfg.rollout.max_completion_length, importance_sampling_level=cfg.grpo.importance_sampling_level,
        )
        skipped += int(update.pop("skipped"))
    t_end = time.perf_counter()

    per_reward = {name: all_gather_tensor(torch.tensor(values, dtype=torch.float32)) for name, values in scored.per_reward.items()}
    lengths = all_gather_tensor(rollout.completion_lengths)
    failures = all_gather_tensor(torch.tensor([[scored.failures.get(n, 0) for n in run.reward_names]], dtype=torch.float32)).sum(0)
    metrics = {
        "reward/mean": all_rewards.mean().item(),
        "reward/std": all_rewards.std().item(),
        "accuracy": (per_reward[run.accuracy_reward] >= 1.0).float().mean().item(),
        "zero_std_fraction": zero_std_fraction(all_rewards, G),
        "completion_length/mean": lengths.float().mean().item(),
        "completion_length/min": lengths.min().item(),
        "completion_length/max": lengths.max().item(),
        "truncated_fraction": all_gather_tensor(rollout.truncated).float().mean().item(),
        "empty_completion_fraction": all_gather_tensor(torch.tensor([not t.strip() for t in rollout.completion_texts])).float().mean().item(),
        **{f"rewards/{name}": values.mean().item() for name, values in per_reward.items()},
        **{f"reward_failures/{name}": failures[i].item() for i, name in enumerate(run.reward_names)},
        **update,
        "skipped_updates": skipped,
        "time/rollout": t_rollout - t_start, "time/rewards": t_rewards - t_rollout, "time/update": t_end - t_rewards,
        "time/step": t_end - t_start, "tokens_per_second": lengths.sum().item() / (t_end - t_start),
    }
    samples = [
        {"prompt": rollout.prompt_texts[i], "completion": rollout.completion_texts[i], "reward": scored.total[i],
         **{name: values[i] for name, values in scored.per_reward.items()}}
        for i in range(min(cfg.log.num_samples, n_local))
    ]
    return metrics, samples


def held_out_eval(run: Run, cfg: TrainConfig, dist_info: DistInfo) -> tuple[dict[str, float], list[dict]]:
    """Greedy pass@1 and sampled pass@k on the held-out set. Each rank evaluates its shard; sums are all-reduced,
    so the metrics are exactly those of one process evaluating every prompt (train/evaluate.py)."""
    rows = {name: values for name, values in run.eval_rows.items() if name != "text"}
    with generation_model(run.engine, zero_stage=cfg.deepspeed.zero_stage, gather_zero3_params=cfg.rollout.gather_zero3_params) as policy:
        result = evaluate(
            policy, run.tokenizer, run.eval_rows["text"], rows, run.combiner, correct_reward=run.accuracy_reward, k=cfg.eval.k,
            max_completion_length=cfg.rollout.max_completion_length, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
            top_k=cfg.rollout.top_k, batch_size=cfg.eval.batch_size, device=dist_info.device,
            add_special_tokens=cfg.data.template != "chat", seed=cfg.seed + dist_info.rank, num_samples=cfg.log.num_samples,
            show_progress=dist_info.is_main,
            synced_gpus=cfg.deepspeed.zero_stage == 3 and dist_info.world_size > 1,  # see train/rollout.py::generation_model
        )
    keys = sorted(result.sums)
    totals = all_reduce_sum(torch.tensor([result.sums[k] for k in keys] + [result.num_prompts], dtype=torch.float64)).tolist()
    return metrics_from_sums(dict(zip(keys, totals[:-1])), int(totals[-1])), [{"split": "eval", **s} for s in result.samples]


def train(cfg: TrainConfig, config_path: str, dist_info: DistInfo) -> Path:
    """The step loop: GRPO step -> log -> checkpoint; stops early on pre-emption or repeated non-finite updates."""
    run = setup(cfg, config_path, dist_info)
    preemption = PreemptionFlag().install()
    consecutive_skips = 0
    checkpoints = run.run_dir / "checkpoints"
    progress = tqdm(range(run.start_step + 1, cfg.max_steps + 1), desc="GRPO", initial=run.start_step, total=cfg.max_steps,
                    disable=not dist_info.is_main, dynamic_ncols=True)
    try:
        # Step 0: the starting point GRPO is measured against (after SFT when there is an sft section).
        start_metrics = dict(run.sft.metrics) if run.sft is not None else {}
        if run.sft is not None:
            run.tracker.log_sft_history(run.sft.history)
        if run.eval_rows is not None and cfg.eval.at_start and run.start_step == 0:
            baseline, eval_samples = held_out_eval(run, cfg, dist_info)
            start_metrics.update(baseline)
            run.tracker.log_samples(0, eval_samples, table="eval_samples")
            if dist_info.is_main:
                tqdm.write(f"thinkrl: step 0 ({'after SFT' if run.sft is not None else 'before training'}): {_format_eval(baseline)}")
        if start_metrics:
            run.tracker.log_metrics(0, start_metrics)
        for step in progress:
            metrics, samples = grpo_step(run, cfg, dist_info)
            if run.eval_rows is not None and ((cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.max_steps):
                eval_metrics, eval_samples = held_out_eval(run, cfg, dist_info)
                metrics.update(eval_metrics)
                run.tracker.log_samples(step, eval_samples, table="eval_samples")
                if dist_info.is_main:
                    tqdm.write(f"thinkrl: step {step}: {_format_eval(eval_metrics)}")
            consecutive_skips = consecutive_skips + 1 if metrics["skipped_updates"] else 0
            if step % cfg.log.every == 0 or step == cfg.max_steps:
                run.tracker.log_metrics(step, metrics)
                run.tracker.log_samples(step, samples)
            progress.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc=f"{metrics['accuracy']:.2f}", loss=f"{metrics['loss']:.4f}")
            if consecutive_skips >= cfg.optim.max_consecutive_skips:
                raise TrainingAborted(
                    f"{consecutive_skips} updates in a row had a non-finite loss or gradient (last at step {step}); "
                    f"stopping. Lower optim.lr or check the rewards; the last good checkpoint is kept in {checkpoints}"
                )
            signal_number = preemption.agreed(dist_info.device)
            if signal_number or step == cfg.max_steps or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
                state = {"step": step, "sampler": run.sampler.state_dict(), "rng": capture_rng(), "wandb_run_id": run.tracker.wandb_run_id}
                save_checkpoint(run.engine, checkpoints, step, state, rank=dist_info.rank, world_size=dist_info.world_size, keep_last=cfg.checkpoint.keep_last)
            if signal_number:
                if dist_info.is_main:
                    print(f"thinkrl: signal {signal_number}: checkpoint saved at step {step} in {checkpoints}; exiting", flush=True)
                raise SystemExit(128 + signal_number)
        if cfg.checkpoint.export_hf:
            export_policy(run.engine, run.tokenizer, run.run_dir / "final_model", zero_stage=cfg.deepspeed.zero_stage, is_main=dist_info.is_main)
    finally:
        preemption.uninstall()
        run.combiner.close()
        run.tracker.close()
    if cfg.log.report and dist_info.is_main:
        try:
            plots = make_report(run.run_dir)
            print(f"thinkrl: report: {len(plots)} plots in {run.run_dir / 'report'}", flush=True)
        except ReportError as exc:
            print(f"thinkrl: warning: no report: {exc}", file=sys.stderr, flush=True)
    return run.run_dir


def _format_eval(metrics: dict[str, float]) -> str:
    return " | ".join(f"{k.removeprefix('eval/')} {v:.3f}" for k, v in metrics.items() if "pass@" in k or "mean@" in k or k == "eval/reward")


def _read_json(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"deepspeed.config_file: {path}: cannot read JSON ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m train` and the `thinkrl` script. Bad input exits 2 with a one-line error."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        dist_info = init_distributed(args.local_rank)
        run_dir = train(cfg, args.config, dist_info)
        if dist_info.is_main:
            print(f"thinkrl: done; run directory {run_dir}", flush=True)
        return 0
    except (ConfigError, ModelLoadError, LauncherError, CheckpointError) as exc:
        print(f"thinkrl: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except TrainingAborted as exc:
        print(f"thinkrl: stopped: {exc}", file=sys.stderr, flush=True)
        return 3
    finally:
        destroy()


if __name__ == "__main__":
    sys.exit(main())
