"""thinkrl: GRPO for reasoning with rule-based rewards, trained through DeepSpeed.

Algorithm (GRPO, DeepSeekMath arXiv:2402.03300 Alg. 1; DeepSeek-R1 arXiv:2501.12948), one optimiser step per loop:
    1. take B prompts (disjoint per rank) and sample G completions each with the current policy (with
       rollout.filter_groups, DAPO's dynamic sampling: more prompts until B groups have reward spread);
    2. score every completion with weighted rule-based rewards;
    3. advantage = (reward - group mean) / group std, over the G completions of the same prompt;
    4. (num_iterations > 1) keep the sampling policy's log-probs as pi_old; (beta > 0) the reference's for k3 KL;
    5. num_iterations times: minimise the clipped surrogate over micro-batches (train/update.py, train/loss.py).
This file is the entry point and that loop; config -> components is train/builders.py.
Deliberate deviations from the paper: no KL term by default (beta = 0, as DAPO and Dr. GRPO argue); asymmetric clip
(epsilon_high); the loss normaliser is selectable (loss_type); rewards of a whole step are gathered over ranks before
advantages are computed, so group statistics never depend on how prompts were split across ranks.

Launch (from the repo root; `thinkrl train` = `python -m train train` = `python -m train`, train/cli.py):
    thinkrl train --config configs/quickstart.yaml [key.sub=value ...]
    torchrun --nproc_per_node 2 -m train --config configs/quickstart.yaml deepspeed.zero_stage=2
    deepspeed --num_gpus 2 --module train --config configs/X.yaml
    accelerate launch --config_file launch/accelerate.yaml --num_processes 2 -m train --config configs/X.yaml
    sbatch --nodes 2 launch/slurm.sbatch configs/X.yaml
"""

from __future__ import annotations

import argparse
import errno
import sys
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from train.advantages import group_advantages, kept_rows
from train.batch import TrainBatch
from train.builders import Run, setup
from train.checkpoint import CheckpointError, capture_rng, export_policy, save_checkpoint
from train.cli_args import CommandParser, add_config_arguments, one_line, print_error, program
from train.config import ConfigError, TrainConfig, load_config
from train.dynamic_sampling import DynamicSamplingLimit, SampledGroups, fill_with_informative_groups
from train.distributed import DistInfo, LauncherError, all_gather_tensor, all_reduce_sum, destroy, init_distributed, peer_lost
from train.evaluate import evaluate, metrics_from_sums
from train.health import new_warnings
from train.logprobs import sequence_logprobs
from train.model import ModelLoadError
from train.preemption import Preempted, PreemptionFlag
from train.report import ReportError, make_report
from train.rollout import generate_rollouts
from train.step_metrics import step_metrics, step_samples
from train.update import policy_update


class TrainingAborted(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps in a row); the message says why."""


COMMAND = "train"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = CommandParser(COMMAND, description="GRPO training from a YAML config (after its optional SFT stage) into the "
                           "run directory output_dir/run_name. Several GPUs or nodes: launch/ (torchrun, deepspeed, "
                           "accelerate, SLURM) run `-m train --config X.yaml`.")
    add_config_arguments(parser, accepts_local_rank=True)
    return parser.parse_intermixed_args(argv)


def sample_groups(run: Run, cfg: TrainConfig, seconds: dict[str, float]) -> SampledGroups:
    """This rank's next B/W prompts, G sampled completions each, scored; adds its wall time to `seconds`."""
    t_start = time.perf_counter()
    rows = run.dataset.select(run.sampler.next_indices()).to_dict()
    prompt_texts, prompt_ids = rows.pop("text"), rows.pop("prompt_ids")
    with run.engine.generation_weights(gather=cfg.rollout.gather_zero3_params) as policy:
        rollout = generate_rollouts(policy, run.tokenizer, prompt_ids, num_generations=cfg.rollout.num_generations,
                                    sampling=run.sampling, device=run.engine.device, synced_gpus=run.engine.lockstep)
    t_rollout = time.perf_counter()
    columns = {name: rollout.per_completion(values) for name, values in rows.items()}
    columns["completion_length"] = rollout.completion_lengths.tolist()
    if rollout.tool_calls is not None:  # rewards may read the calls (e.g. tool_errors); the text holds their output
        columns["tool_calls"] = rollout.tool_calls
    scored = run.combiner(rollout.completion_texts, rollout.per_completion(prompt_texts), columns)
    seconds["rollout"] += t_rollout - t_start
    seconds["rewards"] += time.perf_counter() - t_rollout
    return SampledGroups(prompt_texts, rows, rollout, scored)


def grpo_step(run: Run, cfg: TrainConfig, dist_info: DistInfo) -> tuple[dict[str, float], list[dict]]:
    """One GRPO step: sample groups (with filter_groups: until B have reward spread), score, advantages, (old/ref
    log-probs), num_iterations updates. Returns (metrics over all ranks, a few of this rank's samples)."""
    seconds = {"rollout": 0.0, "rewards": 0.0}
    draw = partial(sample_groups, run, cfg, seconds)
    filter_groups = cfg.rollout.filter_groups
    if filter_groups.enable:
        groups, sampling_metrics = fill_with_informative_groups(
            draw, max_num_gen_batches=filter_groups.max_num_gen_batches, on_limit=filter_groups.on_limit,
            pad_token_id=run.tokenizer.pad_token_id, device=dist_info.device,
        )
    else:
        groups, sampling_metrics = draw(), {}
    prompt_texts, rollout, scored = groups.prompt_texts, groups.rollout, groups.scored
    rewards = torch.tensor(scored.total, dtype=torch.float32)  # [N], NaN where a reward did not apply
    # Advantages from the global batch: groups never straddle ranks, but the "batch" std needs every reward. A group
    # with a row no reward could judge (e.g. an unusable gold answer) is kept out of the advantages and the loss.
    all_rewards, all_applicable = all_gather_tensor(rewards), all_gather_tensor(torch.tensor(scored.applicable, dtype=torch.bool))
    mine = slice(dist_info.rank * rewards.numel(), (dist_info.rank + 1) * rewards.numel())
    all_kept = kept_rows(all_rewards, rollout.group_size, all_applicable)  # [N * world] bool: whole groups
    advantages = group_advantages(all_rewards, rollout.group_size, scale=cfg.grpo.scale_rewards, valid=all_kept)[mine]
    kept = all_kept[mine]
    t_update = time.perf_counter()
    logprobs_of = partial(sequence_logprobs, input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                          completion_length=rollout.completion_mask.shape[1], micro_batching=run.micro_batching,
                          temperature=run.sampling.temperature, chunk_size=cfg.optim.logprob_chunk_size,
                          sharded=run.engine.sharded)
    batch = TrainBatch.from_rollout(rollout, kept, advantages.to(run.engine.device),  # model tokens of kept rows
                                    mask_truncated=cfg.grpo.mask_truncated_completions)
    if cfg.grpo.num_iterations > 1:
        batch.old_logprobs = logprobs_of(run.engine.hf_module)
    if run.engine.has_reference:  # beta > 0
        with run.engine.reference() as reference:
            batch.ref_logprobs = logprobs_of(reference)
    skipped = 0
    for _ in range(cfg.grpo.num_iterations):
        update = policy_update(run.engine, batch, loss=run.loss, micro_batching=run.micro_batching,
                               temperature=run.sampling.temperature, logprob_chunk_size=cfg.optim.logprob_chunk_size)
        skipped += int(update.pop("skipped"))
    t_end = time.perf_counter()
    metrics = step_metrics(
        rollout, scored, all_rewards, all_kept, update, reward_names=run.reward_names, accuracy_reward=run.accuracy_reward,
        skipped_updates=skipped, seconds={**seconds, "update": t_end - t_update},
    )
    metrics.update(sampling_metrics)
    return metrics, step_samples(prompt_texts, rollout, scored, cfg.log.num_samples)


def held_out_eval(run: Run, cfg: TrainConfig, dist_info: DistInfo) -> tuple[dict[str, float], list[dict]]:
    """Greedy pass@1 and sampled pass@k on the held-out set. Each rank evaluates its shard; sums are all-reduced,
    so the metrics are exactly those of one process evaluating every prompt (train/evaluate.py)."""
    columns = {name: values for name, values in run.eval_rows.items() if name not in ("text", "prompt_ids")}
    with run.engine.generation_weights(gather=cfg.rollout.gather_zero3_params) as policy:
        result = evaluate(
            policy, run.tokenizer, run.eval_rows["prompt_ids"], run.eval_rows["text"], columns, run.combiner,
            accuracy_reward=run.accuracy_reward, k=cfg.eval.k, sampling=run.sampling, batch_size=cfg.eval.batch_size,
            device=run.engine.device, seed=cfg.seed + dist_info.rank, num_samples=cfg.log.num_samples,
            show_progress=dist_info.is_main, synced_gpus=run.engine.lockstep,
        )
    keys = sorted(result.sums)
    counts = [result.num_prompts, result.num_not_applicable]
    totals = all_reduce_sum(torch.tensor([result.sums[k] for k in keys] + counts, dtype=torch.float64)).tolist()
    metrics = metrics_from_sums(dict(zip(keys, totals[:-2])), int(totals[-2]))
    metrics["eval/num_not_applicable"] = totals[-1]
    return metrics, [{"split": "eval", **s} for s in result.samples]


def train(cfg: TrainConfig, config_path: str, dist_info: DistInfo) -> Path:
    """The step loop: GRPO step -> log -> checkpoint; stops early on pre-emption or repeated non-finite updates."""
    # Installed before set-up: a signal during the SFT stage saves an SFT checkpoint (train/sft.py) instead of killing.
    preemption = PreemptionFlag().install()
    try:
        run = setup(cfg, config_path, dist_info, stop_signal=partial(preemption.agreed, dist_info.device))
    except BaseException:
        preemption.uninstall()
        raise
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
        history = [{"step": 0, **start_metrics}] if start_metrics else []  # every step's metrics, for the health checks
        for step in progress:
            metrics, samples = grpo_step(run, cfg, dist_info)
            if run.eval_rows is not None and ((cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.max_steps):
                eval_metrics, eval_samples = held_out_eval(run, cfg, dist_info)
                metrics.update(eval_metrics)
                run.tracker.log_samples(step, eval_samples, table="eval_samples")
                if dist_info.is_main:
                    tqdm.write(f"thinkrl: step {step}: {_format_eval(eval_metrics)}")
            history.append({"step": step, **metrics})
            warnings = new_warnings(history)
            for warning in warnings:
                metrics[f"health/{warning.check}"] = history[-1][f"health/{warning.check}"] = 1.0
                if dist_info.is_main:
                    tqdm.write(f"thinkrl: warning: step {step}: {warning.message}")
            consecutive_skips = consecutive_skips + 1 if metrics["skipped_updates"] else 0
            if step % cfg.log.every == 0 or step == cfg.max_steps or warnings:
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
                raise Preempted(signal_number, f"checkpoint saved at step {step} in {checkpoints}")
        if cfg.checkpoint.export_hf:
            adapter_dir = run.run_dir / "final_adapter" if cfg.model.lora is not None and cfg.model.lora.export_adapter else None
            export_policy(run.engine, run.tokenizer, run.run_dir / "final_model", is_main=dist_info.is_main, adapter_dir=adapter_dir)
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


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
PEER_LOST_EXIT = 4


def main(argv: list[str] | None = None) -> int:
    """`thinkrl train` (also `python -m train.main`). Bad input exits 2 with one `thinkrl train: error:` line; a run
    stopped by its own limits exits 3, one lost to a dead peer 4, a pre-empted one 128 + the signal number."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        dist_info = init_distributed(args.local_rank, timeout_s=cfg.ddp_timeout)
        run_dir = train(cfg, args.config, dist_info)
        if dist_info.is_main:
            print(f"{program(COMMAND)}: done; run directory {run_dir}", flush=True)
        return 0
    except (ConfigError, ModelLoadError, LauncherError, CheckpointError) as exc:
        return print_error(COMMAND, str(exc))
    except (TrainingAborted, DynamicSamplingLimit) as exc:
        print(f"{program(COMMAND)}: stopped: {one_line(str(exc))}", file=sys.stderr, flush=True)
        return 3
    except Preempted as exc:
        if dist_info.is_main:
            print(f"{program(COMMAND)}: signal {exc.signal_number}: {exc}; exiting", flush=True)
        return 128 + exc.signal_number
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            # A disk that filled up (or went read-only) mid-run, outside a checkpoint save: not a bug, so no traceback.
            return print_error(COMMAND, f"{exc.filename}: {exc.strerror}; checkpoints already saved are intact; free "
                               "space and resume with checkpoint.resume=auto")
        if peer_lost(exc):
            # A node died (its sockets closed: noticed at once) or hung past ddp_timeout: one line, never a hang.
            return print_error(COMMAND, f"rank {dist_info.rank}: lost contact with another rank (a node died, hung or "
                               f"left the network) in a collective ({one_line(str(exc))[:300]}); checkpoints saved so "
                               "far are intact: restart every node with checkpoint.resume=auto", status=PEER_LOST_EXIT)
        raise
    finally:
        destroy()


if __name__ == "__main__":
    sys.exit(main())
