"""Hand-computed checks of train/loss.py::grpo_loss (style of torchtune tests/torchtune/rlhf/loss/test_ppo_loss.py).

All cases use float64 so expected values can be compared tightly. ε = 0.2 unless stated.
"""

import math

import pytest
import torch

from train.loss import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES, grpo_loss

F64 = torch.float64
NAN = float("nan")


def t(x):
    return torch.tensor(x, dtype=F64)


def run(logprobs, old_logprobs, advantages, mask, *, ref_logprobs=None, **kw):
    """grpo_loss with defaults (bnpo, ε = ε_high = 0.2, β = 0); returns (loss, metrics, d loss / d logprobs)."""
    logprobs = logprobs.clone().requires_grad_(True)
    args = dict(loss_type="bnpo", epsilon=0.2, epsilon_high=0.2, beta=0.0, num_tokens=float(mask.sum()),
                num_sequences=float(mask.shape[0]), max_completion_length=mask.shape[1])  # fmt: skip
    args.update(kw)
    loss, metrics = grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, **args)
    loss.backward()
    return loss, metrics, logprobs.grad


def test_unclipped_ratio_one():
    # ratio = 1 everywhere, so ℓ_{i,t} = -A_i: row 0 -> -2, row 1 -> +0.5 on all 3 tokens.
    # grpo: (mean_t(-2) + mean_t(0.5)) / 2 sequences = (-2 + 0.5) / 2 = -0.75
    # d loss / d logprob_{i,t} = -A_i * ratio / (|o_i| * num_sequences): row 0 -2/6 = -1/3, row 1 0.5/6 = 1/12
    lp = torch.full((2, 3), -1.0, dtype=F64)
    loss, metrics, grad = run(lp, lp.clone(), t([2.0, -0.5]), torch.ones(2, 3, dtype=F64), loss_type="grpo")
    torch.testing.assert_close(loss, t(-0.75))
    torch.testing.assert_close(grad, t([[-1 / 3] * 3, [1 / 12] * 3]))
    assert metrics["clip_ratio/region_mean"] == 0 and metrics["ratio_mean"] == 1 and metrics["num_valid_tokens"] == 6
    assert "kl" not in metrics


def test_clipped_high_has_zero_gradient():
    # A = +1, ratios [1.5, 1.1], ε_high = 0.2:
    #   token 0: min(1.5, clip(1.5) = 1.2) = 1.2 -> ℓ = -1.2, constant -> grad 0
    #   token 1: min(1.1, 1.1) = 1.1          -> ℓ = -1.1, grad = -A * ratio = -1.1
    # bnpo, num_tokens = 2: loss = (-1.2 - 1.1) / 2 = -1.15, grad = [0, -0.55]
    old = t([[-1.0, -2.0]])
    lp = old + t([[math.log(1.5), math.log(1.1)]])
    loss, metrics, grad = run(lp, old, t([1.0]), torch.ones(1, 2, dtype=F64))
    torch.testing.assert_close(loss, t(-1.15))
    torch.testing.assert_close(grad, t([[0.0, -0.55]]))
    assert metrics["clip_ratio/high_mean"] == 0.5 and metrics["clip_ratio/low_mean"] == 0
    assert metrics["clip_ratio/region_mean"] == 0.5
    torch.testing.assert_close(metrics["ratio_mean"], t(1.3))  # (1.5 + 1.1) / 2


def test_clipped_low_has_zero_gradient():
    # A = -1, ratios [0.5, 0.9], ε = 0.2:
    #   token 0: min(-0.5, clip(0.5) * -1 = -0.8) = -0.8 -> ℓ = 0.8, grad 0
    #   token 1: min(-0.9, -0.9) = -0.9                 -> ℓ = 0.9, grad = -A * ratio = 0.9
    # bnpo, num_tokens = 2: loss = (0.8 + 0.9) / 2 = 0.85, grad = [0, 0.45]
    old = t([[-1.0, -2.0]])
    lp = old + t([[math.log(0.5), math.log(0.9)]])
    loss, metrics, grad = run(lp, old, t([-1.0]), torch.ones(1, 2, dtype=F64))
    torch.testing.assert_close(loss, t(0.85))
    torch.testing.assert_close(grad, t([[0.0, 0.45]]))
    assert metrics["clip_ratio/low_mean"] == 0.5 and metrics["clip_ratio/high_mean"] == 0


def test_clip_on_the_harmless_side_is_inactive():
    # Row 0: A = +1, ratio 0.5 < 1 - ε: min(0.5, 0.8) = 0.5 -> ℓ = -0.5, grad -0.5 (not clipped: the objective is
    # pessimistic). Row 1: A = -1, ratio 1.5 > 1 + ε: min(-1.5, -1.2) = -1.5 -> ℓ = 1.5, grad 1.5.
    # bnpo, num_tokens = 2: loss = (-0.5 + 1.5) / 2 = 0.5, grad [-0.25, 0.75]; no clip metric fires.
    old = t([[-1.0], [-1.0]])
    lp = old + t([[math.log(0.5)], [math.log(1.5)]])
    loss, metrics, grad = run(lp, old, t([1.0, -1.0]), torch.ones(2, 1, dtype=F64))
    torch.testing.assert_close(loss, t(0.5))
    torch.testing.assert_close(grad, t([[-0.25], [0.75]]))
    assert metrics["clip_ratio/region_mean"] == 0


def test_clip_higher_asymmetry():
    # A = +1, ratio 1.25. ε_high = 0.2: clipped at 1.2 -> loss -1.2, grad 0.
    # ε_high = 0.28 (DAPO): 1.25 < 1.28 -> unclipped, loss -1.25, grad -1.25. ε (low side) is the same in both.
    old = t([[-1.0]])
    lp = old + math.log(1.25)
    mask = torch.ones(1, 1, dtype=F64)
    loss, metrics, grad = run(lp, old, t([1.0]), mask, epsilon_high=0.2)
    torch.testing.assert_close((loss, grad), (t(-1.2), t([[0.0]])))
    assert metrics["clip_ratio/high_mean"] == 1
    loss, metrics, grad = run(lp, old, t([1.0]), mask, epsilon_high=0.28)
    torch.testing.assert_close((loss, grad), (t(-1.25), t([[-1.25]])))
    assert metrics["clip_ratio/high_mean"] == 0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", IMPORTANCE_SAMPLING_LEVELS)
def test_all_masked_is_zero_and_finite(loss_type, level):
    # Padding holds garbage that would overflow exp() (log-ratio 100, -inf reference): must not leak NaN anywhere.
    lp = torch.zeros(2, 3)
    old = torch.full((2, 3), -100.0)
    ref = torch.full((2, 3), -math.inf)
    logprobs = lp.clone().requires_grad_(True)
    loss, metrics = grpo_loss(
        logprobs, old, ref, torch.tensor([1.0, -1.0]), torch.zeros(2, 3), loss_type=loss_type, epsilon=0.2,
        epsilon_high=0.28, beta=0.1, num_tokens=1.0, num_sequences=2.0, max_completion_length=3,
        importance_sampling_level=level,
    )  # fmt: skip
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logprobs.grad, torch.zeros(2, 3))
    assert set(metrics) == {"clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl",
                            "ratio_mean", "num_valid_tokens"}  # fmt: skip
    for name, value in metrics.items():
        assert value.dim() == 0 and not value.requires_grad and value.item() == 0.0, name


def test_kl_only():
    # A = 0 and ratio = 1, so only β·k3 remains. d = ref - logprob = [ln 2, -ln 2]:
    #   k3 = e^d - d - 1 = [2 - ln2 - 1, 0.5 + ln2 - 1] = [0.30685, 0.19315]  (sum exactly 0.5)
    #   bnpo, num_tokens = 2, β = 0.1: loss = 0.1 * 0.5 / 2 = 0.025; mean kl = 0.25
    #   d k3 / d logprob = 1 - e^d = [-1, 0.5] -> grad = 0.1 / 2 * [-1, 0.5] = [-0.05, 0.025]
    lp = t([[-1.0, -2.0]])
    ref = lp + t([[math.log(2.0), -math.log(2.0)]])
    loss, metrics, grad = run(lp, lp.clone(), t([0.0]), torch.ones(1, 2, dtype=F64), ref_logprobs=ref, beta=0.1)
    torch.testing.assert_close(loss, t(0.025))
    torch.testing.assert_close(metrics["kl"], t(0.25))
    torch.testing.assert_close(grad, t([[-0.05, 0.025]]))


def test_bias_corrected_kl_token_level():
    # A = 0 (only β·KL remains), β = 0.1, bnpo, num_tokens = 2. d = ref - logprob = [-ln 2, ln 2]:
    #   k3 = e^d - d - 1 = [0.5 + ln2 - 1, 2 - ln2 - 1] = [0.19315, 0.30685]  (sum exactly 0.5)
    #   token 0 on-policy (ratio ρ = 1), token 1 at ρ = 2 (logprob = old + ln 2).
    # Plain k3 (DeepSeekMath, default): loss = 0.1 * 0.5 / 2 = 0.025, kl = 0.25,
    #   grad = β/2 * (1 - e^d) = 0.05 * [0.5, -1] = [0.025, -0.05]
    # Bias-corrected (TRL use_bias_correction_kl, DeepSeek-V3.2): ρ·k3 = [0.19315, 0.61371], sum 1.5 - ln2:
    #   loss = 0.05 * (1.5 - ln2) = 0.040343, kl = (1.5 - ln2) / 2 = 0.40343
    #   grad: d(ρ k3)/d logprob = ρ k3 + ρ (1 - e^d) = ρ (-d),
    #   so grad = 0.05 * [1 * ln2, 2 * -ln2] = [0.034657, -0.069315]
    #   (a DETACHED ρ would give 0.05 * ρ (1 - e^d) = [0.025, -0.1]: TRL keeps ρ in the graph, and so do we)
    old = t([[-1.0, -2.0]])
    lp = old + t([[0.0, math.log(2.0)]])
    ref = lp + t([[-math.log(2.0), math.log(2.0)]])
    mask = torch.ones(1, 2, dtype=F64)
    loss, metrics, grad = run(lp, old, t([0.0]), mask, ref_logprobs=ref, beta=0.1)
    torch.testing.assert_close((loss, metrics["kl"], grad), (t(0.025), t(0.25), t([[0.025, -0.05]])))
    plain = run(lp, old, t([0.0]), mask, ref_logprobs=ref, beta=0.1, use_bias_correction_kl=False)
    torch.testing.assert_close(plain[0], loss)  # False is the default
    loss, metrics, grad = run(lp, old, t([0.0]), mask, ref_logprobs=ref, beta=0.1, use_bias_correction_kl=True)
    ln2 = math.log(2.0)
    torch.testing.assert_close(loss, t(0.05 * (1.5 - ln2)))
    torch.testing.assert_close(metrics["kl"], t((1.5 - ln2) / 2))
    torch.testing.assert_close(grad, t([[0.05 * ln2, -0.1 * ln2]]))


def test_bias_corrected_kl_sequence_level_uses_the_sequence_ratio():
    # GSPO: log-ratios [ln 4, 0] -> sequence ratio ρ = e^{(ln 4 + 0) / 2} = 2 on both tokens, ∂ρ/∂logprob_t = ρ / 2.
    # d = ref - logprob = [0, ln 2] -> k3 = [0, 1 - ln2 = 0.30685], d k3 / d logprob = 1 - e^d = [0, -1].
    # A = 0, β = 0.1, bnpo, num_tokens = 2: loss = 0.1 * ρ * (0 + 0.30685) / 2 = 0.1 * (1 - ln2) = 0.030685
    # grad_t = 0.05 * (ρ/2 * Σ k3 + ρ * d k3_t / d logprob_t):
    #   token 0: 0.05 * (1 - ln2)              =  0.015343
    #   token 1: 0.05 * ((1 - ln2) - 2)        = -0.084657
    old = t([[-1.0, -2.0]])
    lp = old + t([[math.log(4.0), 0.0]])
    ref = lp + t([[0.0, math.log(2.0)]])
    loss, _, grad = run(lp, old, t([0.0]), torch.ones(1, 2, dtype=F64), ref_logprobs=ref, beta=0.1,
                        importance_sampling_level="sequence", use_bias_correction_kl=True)  # fmt: skip
    k3 = 1.0 - math.log(2.0)
    torch.testing.assert_close(loss, t(0.1 * k3))
    torch.testing.assert_close(grad, t([[0.05 * k3, 0.05 * (k3 - 2.0)]]))


@pytest.mark.parametrize(
    ("loss_type", "kept_normaliser"), [("dapo", {"num_tokens": 2.0}), ("grpo", {"num_sequences": 1.0})]
)
def test_excluded_rows_leave_the_loss_and_its_normalisers(loss_type, kept_normaliser):
    # Row 0 (kept): A = 1, ratio 1, ref = logprob -> ℓ = -1 on both tokens.
    # Row 1 (its group is not applicable: advantage 0 from group_advantages): ref - logprob = ln 2 on both tokens,
    #   k3 = 1 - ln2 = 0.30685, β = 0.1.
    # Left in (today's default): dapo, num_tokens = 4: loss = (-2 + 0.1 * 2 * 0.30685) / 4 = -0.484657;
    #   grpo, num_sequences = 2: (-1 + 0.1 * 0.30685) / 2 = -0.484657. The excluded row halves the signal and adds KL.
    # Dropped (completion_mask * kept_rows, normalisers counted on kept rows): loss = -1 both ways, row 1 grad 0,
    #   exactly the loss of row 0 alone.
    from train.advantages import kept_rows

    lp = t([[-1.0, -1.0], [-1.0, -1.0]])
    ref = lp + t([[0.0, 0.0], [math.log(2.0), math.log(2.0)]])
    adv, mask = t([1.0, 0.0]), torch.ones(2, 2, dtype=F64)
    left_in = run(lp, lp.clone(), adv, mask, ref_logprobs=ref, beta=0.1, loss_type=loss_type)[0]
    torch.testing.assert_close(left_in, t((-2 + 0.2 * (1 - math.log(2.0))) / 4))
    kept = kept_rows(t([1.0, 0.0, NAN, NAN]), 2)[[0, 2]]  # this micro-batch: a row of group 0 (kept), one of group 1
    kept_mask = mask * kept[:, None]
    args = dict(num_tokens=float(kept_mask.sum()), num_sequences=float(kept.sum()))
    assert {k: args[k] for k in kept_normaliser} == kept_normaliser
    loss, metrics, grad = run(lp, lp.clone(), adv, kept_mask, ref_logprobs=ref, beta=0.1, loss_type=loss_type, **args)
    torch.testing.assert_close(loss, t(-1.0))
    assert torch.equal(grad[1], torch.zeros(2, dtype=F64)) and metrics["num_valid_tokens"] == 2
    alone = run(lp[:1], lp[:1].clone(), adv[:1], mask[:1], ref_logprobs=ref[:1], beta=0.1, loss_type=loss_type)[0]
    torch.testing.assert_close(loss, alone)


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("grpo", -1.5),  # (mean(-1 x4) + mean(-2 x2)) / 2 sequences = (-1 - 2) / 2
        ("bnpo", -8 / 6),  # (4 * -1 + 2 * -2) / 6 tokens
        ("dapo", -8 / 6),  # same formula; only the caller's num_tokens differs
        ("dr_grpo", -0.8),  # -8 / (2 sequences * max_completion_length 5)
    ],
)
def test_normalisation_on_unequal_lengths(loss_type, expected):
    # ratio = 1, A = [1, 2] -> ℓ = -A. Row 0 has 4 valid tokens, row 1 has 2; its padding holds garbage.
    old = t([[-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -50.0, 0.0]])
    lp = t([[-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, 0.0, -30.0]])
    mask = t([[1, 1, 1, 1], [1, 1, 0, 0]])
    loss, metrics, _ = run(lp, old, t([1.0, 2.0]), mask, loss_type=loss_type, num_tokens=6.0, num_sequences=2.0,
                           max_completion_length=5)  # fmt: skip
    torch.testing.assert_close(loss, t(expected))
    assert metrics["num_valid_tokens"] == 6 and metrics["ratio_mean"] == 1


def test_sequence_level_ratio():
    # Row 0: log-ratios [0.1, 0.3] -> sequence log-ratio 0.2, ratio e^0.2 = 1.2214 on both tokens.
    # Row 1: log-ratios [-0.1, <padding 5.0>] -> -0.1, ratio e^-0.1 = 0.9048.
    # A = [1, -1], ε = 0.2, ε_high = 0.28: neither is clipped. ℓ row 0 = -e^0.2, row 1 = +e^-0.1.
    # grpo, 2 sequences: loss = (-e^0.2 + e^-0.1) / 2 = -0.158283
    # grad row 0: d(-e^{mean})/d lp_t = -e^0.2 / 2 per token, / 2 sequences = -e^0.2 / 4 = -0.305351
    # grad row 1: +e^-0.1 / 2 on the valid token, 0 on padding.
    old = t([[-1.0, -1.0], [-1.0, -1.0]])
    lp = old + t([[0.1, 0.3], [-0.1, 5.0]])
    mask = t([[1, 1], [1, 0]])
    loss, metrics, grad = run(lp, old, t([1.0, -1.0]), mask, loss_type="grpo", epsilon_high=0.28,
                              importance_sampling_level="sequence")  # fmt: skip
    e02, em01 = math.exp(0.2), math.exp(-0.1)
    torch.testing.assert_close(loss, t((-e02 + em01) / 2))
    torch.testing.assert_close(grad, t([[-e02 / 4, -e02 / 4], [em01 / 2, 0.0]]))
    torch.testing.assert_close(metrics["ratio_mean"], t((2 * e02 + em01) / 3))
    # token level differs: row 0's second token has ratio e^0.3 = 1.35 > 1.28, clipped, so row 0 = -(e^0.1 + 1.28) / 2
    loss_tok, _, _ = run(lp, old, t([1.0, -1.0]), mask, loss_type="grpo", epsilon_high=0.28)
    torch.testing.assert_close(loss_tok, t((-(math.exp(0.1) + 1.28) / 2 + em01) / 2))


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("level", IMPORTANCE_SAMPLING_LEVELS)
def test_micro_batches_sum_to_big_batch(loss_type, level):
    # bnpo is excluded on purpose: its normaliser is each micro-batch's own token count.
    g = torch.Generator().manual_seed(0)
    n, length = 4, 6
    old = -torch.rand(n, length, generator=g, dtype=F64) * 3
    # Row shifts push row 0 (A > 0) above 1 + ε_high and row 1 (A < 0) below 1 - ε, also at sequence level.
    shift = t([[0.5], [-0.5], [0.0], [0.1]])
    lp = old + shift + 0.3 * torch.randn(n, length, generator=g, dtype=F64)
    ref = old + 0.1 * torch.randn(n, length, generator=g, dtype=F64)
    adv = t([1.0, -0.7, 0.4, -1.3])
    lengths = torch.tensor([6, 2, 4, 1])
    mask = (torch.arange(length)[None, :] < lengths[:, None]).to(F64)
    kw = dict(loss_type=loss_type, epsilon=0.2, epsilon_high=0.28, beta=0.04, num_tokens=float(mask.sum()),
              num_sequences=float(n), max_completion_length=8, importance_sampling_level=level)  # fmt: skip

    big = lp.clone().requires_grad_(True)
    loss_big, metrics = grpo_loss(big, old, ref, adv, mask, **kw)
    loss_big.backward()
    assert 0 < metrics["clip_ratio/region_mean"] < 1  # the comparison exercises both clipped and unclipped tokens

    small = lp.clone().requires_grad_(True)
    loss_sum = sum(grpo_loss(small[s], old[s], ref[s], adv[s], mask[s], **kw)[0] for s in (slice(0, 2), slice(2, 4)))
    loss_sum.backward()
    torch.testing.assert_close(loss_sum, loss_big)
    torch.testing.assert_close(small.grad, big.grad)


def _call(**overrides):
    lp = torch.zeros(2, 3)
    args = dict(logprobs=lp, old_logprobs=lp, ref_logprobs=None, advantages=torch.zeros(2),
                completion_mask=torch.ones(2, 3), loss_type="grpo", epsilon=0.2, epsilon_high=0.2, beta=0.0,
                num_tokens=6.0, num_sequences=2.0, max_completion_length=3)  # fmt: skip
    args.update(overrides)
    return grpo_loss(**args)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"loss_type": "ppo"}, r"loss_type must be one of \('grpo', 'bnpo', 'dr_grpo', 'dapo'\), got 'ppo'"),
        ({"importance_sampling_level": "tok"}, r"\('token', 'sequence'\)"),
        ({"old_logprobs": torch.zeros(2, 4)}, "old_logprobs shape"),
        ({"completion_mask": torch.ones(3, 3)}, "completion_mask shape"),
        ({"advantages": torch.zeros(2, 1)}, "advantages must be"),
        ({"logprobs": torch.zeros(6)}, r"\[N, L\]"),
        ({"beta": 0.1}, "ref_logprobs"),
        ({"epsilon": -0.1}, "epsilon"),
        ({"num_sequences": 0.0}, "num_sequences must be > 0"),
        ({"loss_type": "dapo", "num_tokens": 0.0}, "num_tokens must be > 0"),
        ({"loss_type": "dr_grpo", "max_completion_length": 0}, "max_completion_length"),
    ],
)
def test_bad_arguments_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        _call(**overrides)


def test_bf16_inputs_are_computed_in_fp32():
    loss, metrics = _call(logprobs=torch.zeros(2, 3, dtype=torch.bfloat16), advantages=torch.tensor([1.0, -1.0]))
    assert loss.dtype == torch.float32 and metrics["ratio_mean"].dtype == torch.float32


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", IMPORTANCE_SAMPLING_LEVELS)
def test_gradient_is_zero_when_every_advantage_is(loss_type, level):
    """GRPOLoss.gradient_is_zero's claim, checked by autograd: advantage 0 on every valid row and beta 0 give a loss
    of 0 and an exactly zero gradient, whatever the ratios (clipped on either side or not); a row without valid
    tokens does not count, and one nonzero advantage or a KL term makes the gradient real."""
    from train.loss import GRPOLoss

    def bound(beta):
        return GRPOLoss(loss_type=loss_type, epsilon=0.2, epsilon_high=0.28, beta=beta, max_completion_length=4,
                        importance_sampling_level=level, use_bias_correction_kl=False)

    gen = torch.Generator().manual_seed(0)
    logprobs = (-torch.rand(3, 4, generator=gen)).requires_grad_()
    old = logprobs.detach() + 0.5 * torch.randn(3, 4, generator=gen)  # ratios from ~0.3 to ~3: both clips active
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    advantages = torch.tensor([0.0, 0.0, 2.5])  # the third row has no valid token
    loss = bound(0.0)
    assert loss.gradient_is_zero(advantages, mask)
    value, _ = loss(logprobs, old, None, advantages, mask, step_tokens=5.0, num_sequences=2.0)
    (gradient,) = torch.autograd.grad(value, logprobs)
    assert value.item() == 0.0 and torch.count_nonzero(gradient) == 0
    assert not bound(0.04).gradient_is_zero(advantages, mask)
    advantages[1] = 1e-6
    assert not loss.gradient_is_zero(advantages, mask)
    value, _ = loss(logprobs, old, None, advantages, mask, step_tokens=5.0, num_sequences=2.0)
    assert torch.count_nonzero(torch.autograd.grad(value, logprobs)[0]) > 0
