"""Config -> components: the policy, the reference, the prompts and the eval set, the cold start, the rewards, the run.

Besides the entry point (train/main.py) this is the only module that reads the config tree; everything it builds gets
plain values. Every bad input found here is a ConfigError (or a ModelLoadError / CheckpointError) whose message names
the key, raised before anything heavy is built where that is possible.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from data import PromptSampler, load_prompt_dataset
from data.prompts import prepare_prompts
from data.templates import render_prompt
from data.tool_traces import load_tool_trace_rows
from data.traces import load_sft_rows
from rewards import RewardCombiner, RewardSpec
from train.checkpoint import SFT_CHECKPOINTS, load_checkpoint, restore_rng, resume_point
from train.config import ConfigError, DataConfig, TrainConfig, config_to_dict
from train.distributed import DistInfo, all_reduce_sum
from train.engine import Engine
from train.lora import add_lora
from train.loss import GRPOLoss
from train.micro_batches import MicroBatching
from train.model import build_byte_tokenizer, build_tiny_model, load_pretrained
from train.preflight_checks import (
    SAMPLE_GENERATIONS, SAMPLE_MAX_TOKENS, SAMPLE_PROMPTS, VERIFIED_REWARDS, GoldReport, gold_failure, gold_report, gold_summary,
    sample_report, sample_summary,
)
from train.rollout import SamplingParams
from train.settings import engine_spec, grpo_loss_fn, micro_batching, sampling_params, trace_protocol
from train.sft import SFTCheckpoints, SFTResult, sft_stage
from train.tracking import RunTracker, check_output_dir, check_run_dir, make_run_dir

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
            cfg.model.name_or_path, gguf_file=cfg.model.gguf_file, dtype=cfg.model.dtype,
            attn_implementation=cfg.model.attn_implementation, trust_remote_code=cfg.model.trust_remote_code,
        )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # training forward; generation turns the cache on for itself
    return model, tokenizer


def with_lora(cfg: TrainConfig, model):
    """`model` with fresh LoRA adapters (model.lora), initialised from the run's seed so every rank and every rerun
    starts from the same A matrices (B starts at zero)."""
    lora = cfg.model.lora
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            return add_lora(model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules,
                            use_rslora=lora.use_rslora)
        except ValueError as exc:
            raise ConfigError(f"model.lora.target_modules: {exc}") from None


def read_prompt_rows(data: DataConfig, *, source: str, split: str, limit: int | None, key: str):
    """The raw rows of `source` (columns prompt, answer, keep_columns); a file that cannot be read, with the file and
    line where there is one, is a ConfigError naming `key`."""
    try:
        return load_prompt_dataset(
            source, split=split, prompt_column=data.prompt_column, answer_column=data.answer_column,
            keep_columns=data.keep_columns, data_format=data.data_format, limit=limit, subset=data.subset,
        )
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
        raise ConfigError(f"{key}: {exc}") from None


def read_sources(cfg: TrainConfig):
    """(training rows, eval rows or None), read once, before the model loads: unreadable data (named by file and
    line) stops the run before anything heavy starts."""
    train_rows = read_prompt_rows(cfg.data, source=cfg.data.source, split=cfg.data.split, limit=cfg.data.limit, key="data.source")
    eval_rows = None
    if cfg.eval.source is not None:
        eval_rows = read_prompt_rows(cfg.data, source=cfg.eval.source, split=cfg.eval.split, limit=cfg.eval.limit, key="eval.source")
    return train_rows, eval_rows


def load_prompts(data: DataConfig, tokenizer, dataset, *, source: str, min_prompts: int, key: str):
    """`dataset` (read_prompt_rows' rows of `source`) with the prepared prompt's `text` and `prompt_ids` columns
    (data/prompts.py, the one preparation); prompts over data.max_prompt_length tokens are an error or dropped and
    counted. `key` names the config entry of `source` in errors (data.source or eval.source). Returns (dataset,
    number dropped)."""
    try:
        prepared = prepare_prompts(
            dataset["prompt"], tokenizer, template=data.template, system_prompt=data.system_prompt,
            prefill_think=data.prefill_think, prefill_answer=data.prefill_answer, max_prompt_length=data.max_prompt_length,
            on_long_prompt=data.on_long_prompt,
        )
    except ValueError as exc:  # a prompt over the limit, a chat template the tokenizer lacks, malformed messages
        raise ConfigError(f"{key}: {source}: {exc}") from None
    dataset = dataset.select(prepared.kept).add_column("text", prepared.texts).add_column("prompt_ids", prepared.ids)
    if len(dataset) < min_prompts:
        raise ConfigError(
            f"{key}: {source}: {len(dataset)} prompts fit data.max_prompt_length={data.max_prompt_length} "
            f"(longest is {prepared.longest} tokens); at least {min_prompts} are needed"
        )
    return dataset, prepared.num_dropped


def load_train_and_eval(cfg: TrainConfig, tokenizer, rank: int, world: int, sources):
    """From `sources` (read_sources' rows): training prompts minus any that appear in the eval set, this rank's
    disjoint shard of the eval set, and the rendered eval prompts (which SFT data must not contain either)."""
    train_rows, raw_eval = sources
    eval_rows, held_out = None, set()
    train_set, dropped = load_prompts(cfg.data, tokenizer, train_rows, source=cfg.data.source,
                                      min_prompts=cfg.rollout.prompts_per_step, key="data.source")
    if raw_eval is not None:
        eval_set, _ = load_prompts(cfg.data, tokenizer, raw_eval, source=cfg.eval.source, min_prompts=world, key="eval.source")
        held_out = set(eval_set["text"])
        train_set = train_set.filter(lambda row: row["text"] not in held_out)
        if len(train_set) < cfg.rollout.prompts_per_step:
            raise ConfigError(f"eval.source: {cfg.eval.source}: it contains nearly all training prompts of data.source")
        # Equal shard sizes: with synced generation (ZeRO-3) every rank must make the same calls.
        usable = len(eval_set) - len(eval_set) % world
        eval_rows = eval_set.select(range(rank, usable, world)).to_dict()
    return train_set, dropped, eval_rows, held_out


def cold_start(cfg: TrainConfig, model, tokenizer, dist_info: DistInfo, ds_overrides: dict | None, held_out: set[str], *,
               run_dir: Path, resume_from: Path | None = None, stop_signal=None):
    """The `sft` section: fine-tune `model` on prompt/completion rows before GRPO (train/sft.py). Rows whose rendered
    prompt is in the eval set are dropped, so held-out accuracy stays held out. Checkpoints go to
    <run_dir>/sft_checkpoints; `resume_from` (an SFT checkpoint) and `stop_signal` go to sft_stage (exact resume,
    pre-emption). Returns (fine-tuned model, SFTResult)."""
    sft, data = cfg.sft, cfg.data
    try:
        if sft.traces == "tool":
            rows = load_tool_trace_rows(sft.source, protocol=trace_protocol(cfg), tool_slip=sft.tool_slip, seed=cfg.seed,
                                        limit=sft.limit)
        else:
            rows = load_sft_rows(sft.source, split=sft.split, prompt_column=sft.prompt_column, completion_column=sft.completion_column,
                                 data_format=sft.data_format, limit=sft.limit, subset=sft.subset, carry_slip=sft.carry_slip, seed=cfg.seed)
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
        raise ConfigError(f"sft.source: {exc}") from None
    # No prefill_answer here: the config refuses it together with an sft section.
    render = dict(template=data.template, system_prompt=data.system_prompt, prefill_think=data.prefill_think)
    rows = [row for row in rows if render_prompt(row["prompt"], tokenizer, **render) not in held_out]
    if not rows:
        raise ConfigError(f"sft.source: {sft.source}: no rows left after removing the eval prompts")
    sampling = sampling_params(cfg)  # with rollout.tools, the tool's responses in the traces are masked out of the labels
    lora = cfg.model.lora is not None and sft.lora
    if lora:
        model = with_lora(cfg, model)
    if sft.batch_size % (dist_info.world_size * sft.micro_batch_size):
        raise ConfigError(f"sft.batch_size={sft.batch_size} must be divisible by the world size {dist_info.world_size} x "
                          f"sft.micro_batch_size={sft.micro_batch_size}")
    spec = dataclasses.replace(
        engine_spec(cfg, world_size=dist_info.world_size, rows_per_rank=sft.batch_size // dist_info.world_size,
                    overrides=ds_overrides),
        micro_batch_size=sft.micro_batch_size, lr=sft.lr, weight_decay=sft.weight_decay, warmup_steps=sft.warmup_steps, schedule=sft.lr_scheduler,
    )
    try:
        model, result = sft_stage(
            model, tokenizer, rows, **render, max_length=sft.max_length, packing=sft.packing, max_steps=sft.max_steps,
            epochs=sft.epochs, batch_size=sft.batch_size, engine_spec=spec, seed=cfg.seed, rank=dist_info.rank,
            chunk_size=cfg.optim.logprob_chunk_size, show_progress=dist_info.is_main,
            checkpoints=SFTCheckpoints(run_dir / SFT_CHECKPOINTS, every=sft.checkpoint_every, keep_last=cfg.checkpoint.keep_last,
                                       resume_from=resume_from),
            stop_signal=stop_signal, tool_protocol=None if sampling.tools is None else sampling.tools.protocol,
        )
    except ValueError as exc:  # no example fits sft.max_length, an empty rendered prompt
        raise ConfigError(f"sft: {sft.source}: {exc}") from None
    # The SFT adapter goes into the weights: GRPO adds fresh adapters, and its reference (adapters off) is the SFT model.
    return (model.merge_and_unload() if lora else model), result


def build_rewards(cfg: TrainConfig) -> tuple[RewardCombiner, list[str], str]:
    """(combiner, reward names, the reward that defines accuracy); unknown names or options are a ConfigError."""
    specs = [RewardSpec(name=r.name, weight=r.weight, kwargs=r.kwargs) for r in cfg.rewards.functions]
    try:
        combiner = RewardCombiner(
            specs, timeout_s=cfg.rewards.timeout_s, num_workers=cfg.rewards.num_workers, on_error=cfg.rewards.on_error,
            worker_memory_mb=cfg.rewards.worker_memory_mb, worker_max_calls=cfg.rewards.worker_max_calls,
        )
    except ValueError as exc:
        raise ConfigError(f"rewards.functions: {exc}") from None
    names = [s.name for s in specs]
    accuracy_reward = cfg.rewards.accuracy_reward or names[0]
    if accuracy_reward not in names:
        raise ConfigError(f"rewards.accuracy_reward: {accuracy_reward!r} is not one of rewards.functions {names}")
    return combiner, names, accuracy_reward


def gold_check(cfg: TrainConfig, tokenizer, train_set, eval_rows: dict | None, combiner: RewardCombiner,
               accuracy_reward: str, *, num_examples: int = 3, device=None) -> tuple[list[GoldReport], str | None]:
    """The preflight's gold check (train/preflight_checks.py) of the training set and this rank's eval shard. Every rank
    loads the same training set, and the eval counts are summed over ranks (on `device`, which the backend must
    reach), so every rank takes the same decision. Returns (reports, the one-line error when too many rows cannot
    score 1, else None)."""
    def count_tokens(texts):  # completion_length as rollouts count it: the completion's tokens and EOS
        return [len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    kwargs = dict(template=cfg.data.template, count_tokens=count_tokens, num_examples=num_examples)
    reports = [gold_report("training", train_set.remove_columns("prompt_ids").to_dict(), combiner, accuracy_reward, **kwargs)]
    if eval_rows is not None:
        shard = gold_report("eval", eval_rows, combiner, accuracy_reward, **kwargs)
        reports.append(shard.with_counts(all_reduce_sum(torch.tensor(shard.counts(), dtype=torch.float64, device=device)).tolist()))
    return reports, gold_failure(reports, cfg.rewards.preflight_max_bad_fraction)


def sample_check(cfg: TrainConfig, policy, tokenizer, train_set, combiner: RewardCombiner, device, *,
                 num_prompts: int = SAMPLE_PROMPTS, num_generations: int = SAMPLE_GENERATIONS,
                 max_tokens: int = SAMPLE_MAX_TOKENS, synced_gpus: bool = False) -> list[dict]:
    """The preflight's sample check: the first `num_prompts` training prompts, `num_generations` samples each, from
    the HF module `policy` (in training: Engine.generation_weights(), with synced_gpus=Engine.lockstep, and every rank
    calls this). Runs under its own seed in a forked RNG, so the training's random streams are untouched."""
    rows = train_set.select(range(min(num_prompts, len(train_set)))).to_dict()
    sampling = sampling_params(cfg)
    sampling = dataclasses.replace(sampling, max_completion_length=min(sampling.max_completion_length, max_tokens))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        return sample_report(policy, tokenizer, rows, combiner, num_generations=num_generations, sampling=sampling,
                             device=device, synced_gpus=synced_gpus)


def _preflight_gold(cfg, tokenizer, train_set, eval_rows, combiner, accuracy_reward, dist_info: DistInfo) -> None:
    reports, failure = gold_check(cfg, tokenizer, train_set, eval_rows, combiner, accuracy_reward, device=dist_info.device)
    if failure is not None and accuracy_reward in VERIFIED_REWARDS:
        combiner.close()
        raise ConfigError(failure)
    if dist_info.is_main:
        if failure is not None:
            print(f"thinkrl: warning: {failure} (not stopping: the perfect completion of {accuracy_reward} is a guess)",
                  file=sys.stderr, flush=True)
        print(f"thinkrl: preflight: {gold_summary(reports)}", flush=True)


def read_deepspeed_file(cfg: TrainConfig) -> dict | None:
    """deepspeed.config_file's JSON, checked against deepspeed.zero_stage (which the SFT engine and the policy engine
    are built with; once an engine exists, it is asked instead)."""
    path = cfg.deepspeed.config_file
    if path is None:
        return None
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"deepspeed.config_file: {path}: cannot read JSON ({exc})") from None
    file_stage = overrides.get("zero_optimization", {}).get("stage", cfg.deepspeed.zero_stage)
    if file_stage != cfg.deepspeed.zero_stage:
        raise ConfigError(f"deepspeed.config_file: {path} sets zero_optimization.stage={file_stage} but "
                          f"deepspeed.zero_stage={cfg.deepspeed.zero_stage}; set deepspeed.zero_stage={file_stage} too")
    return overrides


def check_batch_layout(cfg: TrainConfig, dist_info: DistInfo) -> int:
    """Checks that need the world size; returns the completions per rank."""
    if cfg.model.dtype == "float16" and dist_info.device.type == "cpu":
        raise ConfigError("model.dtype: float16 needs a GPU (DeepSpeed's CPU accelerator has no fp16); use float32 or bfloat16 on CPU")
    world = dist_info.world_size
    if cfg.rollout.prompts_per_step % world:
        raise ConfigError(f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} must be divisible by the world size {world}")
    completions_per_rank = cfg.rollout.prompts_per_step // world * cfg.rollout.num_generations
    if completions_per_rank % cfg.optim.micro_batch_size:
        raise ConfigError(f"optim.micro_batch_size={cfg.optim.micro_batch_size} must divide the {completions_per_rank} completions per rank")
    return completions_per_rank


@dataclass
class Run:
    """Everything the step loop touches, built once by `setup`; settings as values, not config keys."""

    engine: Engine  # the policy: the one truth for ZeRO stage, device, LoRA, the weights and (beta > 0) the reference
    sampling: SamplingParams  # rollout sampling; evaluation uses it too
    loss: GRPOLoss  # the GRPO loss with its options bound
    micro_batching: MicroBatching  # for the log-prob passes and the update
    tokenizer: object
    dataset: object  # training prompts with `text` and `prompt_ids` columns
    sampler: PromptSampler
    combiner: RewardCombiner
    tracker: RunTracker
    run_dir: Path
    reward_names: list[str]
    accuracy_reward: str
    start_step: int
    eval_rows: dict[str, list] | None  # this rank's shard of the held-out set, with `text` and `prompt_ids` columns
    sft: SFTResult | None  # the SFT stage of this run (None: no sft section, or resumed past it)


def setup(cfg: TrainConfig, config_path: str, dist_info: DistInfo, stop_signal=None) -> Run:
    """Validate what can only be checked at run time, build model, data, rewards and engine, resume if asked.
    `stop_signal` (collective; a signal number when pre-empted) lets the SFT stage save and stop."""
    rank, world = dist_info.rank, dist_info.world_size
    run_dir = make_run_dir(cfg.output_dir, cfg.run_name, Path(config_path).stem)
    check_output_dir(cfg.output_dir)  # writable and not full, before hours of loading
    check_run_dir(run_dir, resume=cfg.checkpoint.resume)  # another run's logs and checkpoints are never written over
    completions_per_rank = check_batch_layout(cfg, dist_info)
    ds_overrides = read_deepspeed_file(cfg)
    checkpoint_dir, sft_checkpoint = resume_point(cfg.checkpoint.resume, run_dir, has_sft=cfg.sft is not None)
    combiner, reward_names, accuracy_reward = build_rewards(cfg)  # names resolved before anything heavy is built
    try:
        sources = read_sources(cfg)  # before the model loads
        model, tokenizer = build_policy(cfg)
        dataset, dropped, eval_rows, held_out = load_train_and_eval(cfg, tokenizer, rank, world, sources)
        if cfg.rewards.preflight:  # before SFT and the engine: a data/reward mismatch stops the run in seconds
            _preflight_gold(cfg, tokenizer, dataset, eval_rows, combiner, accuracy_reward, dist_info)
        sft_result = None
        if cfg.sft is not None and checkpoint_dir is None:  # a GRPO checkpoint already holds the fine-tuned weights
            model, sft_result = cold_start(cfg, model, tokenizer, dist_info, ds_overrides, held_out, run_dir=run_dir,
                                           resume_from=sft_checkpoint, stop_signal=stop_signal)
        sampler = PromptSampler(len(dataset), cfg.rollout.prompts_per_step // world, seed=cfg.seed, rank=rank, world_size=world)
        if cfg.model.lora is not None:
            model = with_lora(cfg, model)  # the reference is this model with its adapters off: no copy
        spec = engine_spec(cfg, world_size=world, rows_per_rank=completions_per_rank, overrides=ds_overrides)
        engine = Engine.build(model, spec, with_reference=cfg.grpo.beta > 0)
        if cfg.rewards.preflight and checkpoint_dir is None:  # the policy GRPO starts from (after SFT); every rank samples
            with engine.generation_weights(gather=cfg.rollout.gather_zero3_params) as policy:
                samples = sample_check(cfg, policy, tokenizer, dataset, combiner, engine.device, synced_gpus=engine.lockstep)
            if dist_info.is_main:
                print(f"thinkrl: preflight: {sample_summary(samples)}", flush=True)
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
                  f"world size {world} | ZeRO-{engine.zero_stage}{resumed}", flush=True)
        return Run(engine, sampling_params(cfg), grpo_loss_fn(cfg), micro_batching(cfg), tokenizer, dataset, sampler, combiner, tracker, run_dir, reward_names, accuracy_reward,
                   start_step, eval_rows, sft_result)
    except BaseException:  # a bad input found later, a pre-emption during SFT: the reward workers go too
        combiner.close()
        raise
