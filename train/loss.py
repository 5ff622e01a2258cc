r"""GRPO clipped-surrogate policy loss: a pure tensor function, no model, no config (and `GRPOLoss`, its options bound).

Per completion token t of completion o_i (DeepSeekMath arXiv:2402.03300 eq. 3, with DAPO's asymmetric "clip-higher",
arXiv:2503.14476 §3.1):

    ρ_{i,t} = π_θ(o_{i,t} | q, o_{i,<t}) / π_θ_old(o_{i,t} | q, o_{i,<t})
    ℓ_{i,t} = -min(ρ_{i,t} Â_i, clip(ρ_{i,t}, 1 - ε, 1 + ε_high) Â_i) + β k3_{i,t}
    k3_{i,t} = π_ref/π_θ - log(π_ref/π_θ) - 1    (DeepSeekMath eq. 4; http://joschu.net/blog/kl-approx.html)

With importance_sampling_level="sequence" (GSPO, arXiv:2507.18071) ρ_{i,t} is replaced for every t by the
length-normalised sequence ratio exp(mean_t log ρ_{i,t}); the gradient flows through that mean.

With use_bias_correction_kl=True the KL term is β ρ_{i,t} k3_{i,t} instead of β k3_{i,t}: the tokens were sampled
from π_θ_old, so weighting k3 by ρ = π_θ/π_θ_old makes it an unbiased estimate of KL(π_θ || π_ref) and its gradient
the unbiased reverse-KL gradient (DeepSeek-V3.2, arXiv:2512.02556 §3.1 "Scaling GRPO", eq. 7). As in TRL 1.16
(`per_token_kl = per_token_kl * coef_1` in `GRPOTrainer._compute_loss`, `use_bias_correction_kl`), ρ is NOT
detached, so the gradient changes even on-policy where ρ = 1: d(ρ k3)/d log π_θ = ρ (log π_θ - log π_ref), against
1 - π_ref/π_θ for plain k3. With importance_sampling_level="sequence" the sequence ratio is the weight, as in TRL.

The loss types differ only in how ℓ is reduced (|o_i| = valid tokens of completion i):

    grpo     Σ_i (Σ_t ℓ_{i,t} / |o_i|) / num_sequences          DeepSeekMath eq. 3
    bnpo     Σ_{i,t} ℓ_{i,t} / num_tokens                       num_tokens = valid tokens of this micro-batch
    dapo     Σ_{i,t} ℓ_{i,t} / num_tokens                       num_tokens = valid tokens of the whole optimiser step
                                                                (DAPO §3.3, token-level policy-gradient loss)
    dr_grpo  Σ_{i,t} ℓ_{i,t} / (num_sequences · max_completion_length)   Dr. GRPO arXiv:2503.20783 §3.2

Reference implementation: TRL `trl/trainer/grpo_trainer.py::GRPOTrainer._compute_loss` (huggingface/trl). Unlike TRL,
the normalisers are passed in, global over the optimiser step, so that the SUM of this loss over micro-batches and
data-parallel ranks is exactly the big-batch loss (except bnpo, which is per-micro-batch by definition).
"""

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


def token_normaliser(loss_type: str, *, step_tokens: float, micro_batch_tokens: float) -> float:
    """The `num_tokens` that grpo_loss takes for a micro-batch: bnpo normalises by the micro-batch's own valid tokens
    (TRL's definition, so it depends on micro-batching), dapo by the valid tokens of the whole optimiser step on all
    ranks; grpo and dr_grpo do not use it.

    >>> token_normaliser("bnpo", step_tokens=40.0, micro_batch_tokens=7.0), token_normaliser("dapo", step_tokens=40.0, micro_batch_tokens=7.0)
    (7.0, 40.0)
    """
    return max(micro_batch_tokens, 1.0) if loss_type == "bnpo" else step_tokens


def _check_inputs(logprobs, old_logprobs, ref_logprobs, advantages, completion_mask, **scalars) -> None:
    if scalars["loss_type"] not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {scalars['loss_type']!r}")
    if scalars["importance_sampling_level"] not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(
            f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
            f"got {scalars['importance_sampling_level']!r}"
        )
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [N, L], got shape {tuple(logprobs.shape)}")
    named = {"old_logprobs": old_logprobs, "completion_mask": completion_mask, "ref_logprobs": ref_logprobs}
    for name, t in named.items():
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logprobs shape {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [N]={tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}")
    for name in ("epsilon", "epsilon_high", "beta"):
        if scalars[name] < 0:
            raise ValueError(f"{name} must be >= 0, got {scalars[name]}")
    if scalars["beta"] > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (the KL term is against the reference policy)")
    used = {"grpo": ("num_sequences",), "bnpo": ("num_tokens",), "dapo": ("num_tokens",),
            "dr_grpo": ("num_sequences", "max_completion_length")}[scalars["loss_type"]]  # fmt: skip
    for name in used:
        if not scalars[name] > 0:
            raise ValueError(f"{name} must be > 0, got {scalars[name]}")


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    ref_logprobs: Tensor | None,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    loss_type: str,
    epsilon: float,
    epsilon_high: float,
    beta: float,
    num_tokens: float,
    num_sequences: float,
    max_completion_length: int,
    importance_sampling_level: str = "token",
    use_bias_correction_kl: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped GRPO surrogate loss of one micro-batch (see the module docstring for the formulas).

    Args:
        logprobs: [N, L] log π_θ of each completion token; carries the gradient.
        old_logprobs: [N, L] log π_θ_old of the policy that sampled the completions (detached here).
        ref_logprobs: [N, L] log π_ref, or None; required when beta > 0, ignored when beta == 0.
        advantages: [N] one advantage per completion (train.advantages.group_advantages).
        completion_mask: [N, L] 1 for real completion tokens, 0 for padding. Padding may hold any finite/inf values.
        loss_type: one of LOSS_TYPES; only the reduction differs.
        epsilon: lower clip, ρ >= 1 - epsilon.
        epsilon_high: upper clip, ρ <= 1 + epsilon_high (DAPO clip-higher; = epsilon for symmetric PPO clipping).
        beta: coefficient of the k3 KL penalty to the reference policy; 0 disables it.
        num_tokens: bnpo: valid tokens of THIS micro-batch (completion_mask.sum().clamp(min=1)); dapo: valid tokens
            of the whole optimiser step (all micro-batches, all ranks). Unused (not checked) by grpo/dr_grpo.
        num_sequences: grpo/dr_grpo: completions in the whole optimiser step (all micro-batches, all ranks).
            Unused (not checked) by bnpo/dapo.
        max_completion_length: dr_grpo's constant per-sequence normaliser (the generation budget).
        importance_sampling_level: "token" (PPO/GRPO) or "sequence" (GSPO).
        use_bias_correction_kl: weight the k3 term by the (non-detached) importance ratio, TRL's option of that name
            (DeepSeek-V3.2); False is DeepSeekMath's plain k3. Only matters when beta > 0.

    Returns:
        loss: scalar, to be backpropagated as is (no further division by micro-batch count or world size; if the
            engine averages gradients over ranks, the caller must compensate, e.g. multiply by world size).
        metrics: detached scalars, token-weighted over this micro-batch's valid tokens (0 if it has none):
            clip_ratio/low_mean, clip_ratio/high_mean, clip_ratio/region_mean, ratio_mean, kl (only if beta > 0;
            the importance-weighted k3 when use_bias_correction_kl, as TRL logs it), num_valid_tokens.
    """
    _check_inputs(
        logprobs, old_logprobs, ref_logprobs, advantages, completion_mask, loss_type=loss_type, epsilon=epsilon,
        epsilon_high=epsilon_high, beta=beta, num_tokens=num_tokens, num_sequences=num_sequences,
        max_completion_length=max_completion_length, importance_sampling_level=importance_sampling_level,
    )  # fmt: skip
    # Work in >= fp32: in bf16 a ratio of 1.004 rounds to 1.0 and the clip tests become meaningless.
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    logprobs = logprobs.to(dtype)
    valid = completion_mask.bool()
    mask = valid.to(dtype)
    tokens_per_seq = mask.sum(dim=1).clamp(min=1.0)  # [N]; clamp: an empty completion contributes 0, not 0/0
    adv = advantages.detach().to(dtype).unsqueeze(1)  # [N, 1]

    # Zero padding BEFORE exp: garbage log-probs there (e.g. -inf) would otherwise give inf * 0 = NaN, in the loss
    # or in its gradient, even though the mask removes them from the sum.
    log_ratio = torch.where(valid, logprobs - old_logprobs.detach().to(dtype), 0.0)  # [N, L]
    if importance_sampling_level == "sequence":
        log_ratio = (log_ratio.sum(dim=1) / tokens_per_seq).unsqueeze(1).expand_as(log_ratio)  # GSPO
    ratio = torch.exp(log_ratio)
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
    per_token_loss = -torch.min(ratio * adv, clipped_ratio * adv)  # [N, L]
    if beta > 0:
        ref_minus_pi = torch.where(valid, ref_logprobs.detach().to(dtype) - logprobs, 0.0)
        kl = torch.exp(ref_minus_pi) - ref_minus_pi - 1.0  # k3 >= 0, unbiased estimate of KL(π_θ || π_ref) under π_θ
        if use_bias_correction_kl:
            kl = kl * ratio  # tokens come from π_θ_old: importance-weight k3 (see module docstring; not detached)
        per_token_loss = per_token_loss + beta * kl
    per_token_loss = per_token_loss * mask

    # Every normaliser is a constant of the optimiser step (never this micro-batch's size, except bnpo by definition),
    # so loss(all rows) == Σ_micro-batches loss(rows) and gradient accumulation needs no rescaling.
    if loss_type == "grpo":
        loss = (per_token_loss.sum(dim=1) / tokens_per_seq).sum() / num_sequences
    elif loss_type in ("bnpo", "dapo"):
        loss = per_token_loss.sum() / num_tokens
    else:  # dr_grpo
        loss = per_token_loss.sum() / (num_sequences * max_completion_length)

    with torch.no_grad():
        n_valid = mask.sum()
        denom = n_valid.clamp(min=1.0)

        def token_mean(x: Tensor) -> Tensor:
            return (x.to(dtype) * mask).sum() / denom

        # A clip "counts" only where it is active, i.e. where it zeroes the token's gradient.
        low = (ratio < 1.0 - epsilon) & (adv < 0)
        high = (ratio > 1.0 + epsilon_high) & (adv > 0)
        metrics = {
            "clip_ratio/low_mean": token_mean(low),
            "clip_ratio/high_mean": token_mean(high),
            "clip_ratio/region_mean": token_mean(low | high),
            "ratio_mean": token_mean(ratio),
            "num_valid_tokens": n_valid,
        }
        if beta > 0:
            metrics["kl"] = token_mean(kl)
        metrics = {k: v.detach() for k, v in metrics.items()}
    return loss, metrics


@dataclass(frozen=True)
class GRPOLoss:
    """grpo_loss with its options bound: built once from the config (the builders fill every field from the config
    section of the same name's keys, train/settings.py `values_from`), called per micro-batch with the step's counts.
    A new loss option is a field here and a key in train/config.py's GRPOConfig; nothing in between passes it on."""

    loss_type: str
    epsilon: float
    epsilon_high: float
    beta: float
    max_completion_length: int
    importance_sampling_level: str
    use_bias_correction_kl: bool

    def __call__(self, logprobs: Tensor, old_logprobs: Tensor, ref_logprobs: Tensor | None, advantages: Tensor,
                 completion_mask: Tensor, *, step_tokens: float, num_sequences: float) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of one micro-batch; `step_tokens` and `num_sequences` count the whole optimiser step on all ranks
        (train/update.py's step_normalisers)."""
        micro_batch_tokens = float(completion_mask.sum().item())
        return grpo_loss(
            logprobs, old_logprobs, ref_logprobs, advantages, completion_mask, **asdict(self),
            num_tokens=token_normaliser(self.loss_type, step_tokens=step_tokens, micro_batch_tokens=micro_batch_tokens),
            num_sequences=num_sequences,
        )

    def gradient_is_zero(self, advantages: Tensor, completion_mask: Tensor) -> bool:
        """Whether the loss of these rows has exactly zero gradient whatever the weights: no KL term (beta == 0) and
        every row with a valid token has advantage exactly 0 (a group whose rewards were all equal, e.g. DAPO's padding
        at max_num_gen_batches). Then each token's -min(r·A, clip(r)·A) is -min(0, 0) and its gradient A·∂r = 0, so
        Engine.optimizer_step may leave out the backward (a non-finite ratio is caught there: 0·inf is not 0)."""
        if self.beta > 0:
            return False
        rows = completion_mask.sum(dim=1) > 0
        return bool((advantages[rows] == 0).all())
