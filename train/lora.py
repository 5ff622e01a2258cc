"""LoRA through `peft`: adding adapters, the reference policy as the same model with adapters off, merged weights.

LoRA (Hu et al. 2021, arXiv:2106.09685) freezes every base weight W and trains a low-rank update, so a target layer
computes x·(W + s·B·A)ᵀ with A [r, in], B [out, r] and s = alpha / r (alpha / sqrt(r) with rsLoRA). B starts at zero,
so the adapted model starts equal to the base. Two consequences the trainer uses:

* the KL reference of GRPO (the initial policy) is the policy with its adapters switched off, so a LoRA run holds
  one copy of the weights where full fine-tuning with beta > 0 holds two;
* the optimiser state covers only A and B (2·r·(in + out) numbers per layer instead of in·out).

The export writes W + s·B·A as a plain HF model (`merged_state_dict`, a pure function of the state dict, so it also
serves a ZeRO-3 consolidated state dict, which a peft `merge_and_unload` of sharded parameters could not).
"""

from __future__ import annotations

import copy
import re
import sys
from contextlib import contextmanager
from typing import Iterator

import torch

ADAPTER = "default"  # peft's name of the one adapter thinkrl adds
_PEFT_PREFIX = "base_model.model."


def plain_name(peft_name: str) -> str:
    """A peft state-dict or module name as the plain transformers model names it.

    >>> plain_name("base_model.model.model.layers.0.mlp.up_proj.base_layer.weight")
    'model.layers.0.mlp.up_proj.weight'
    """
    return peft_name.replace(".base_layer.", ".").removeprefix(_PEFT_PREFIX)


def add_lora(model, *, r: int, alpha: float, dropout: float, target_modules, use_rslora: bool):
    """`model` wrapped in a peft PeftModel with one LoRA adapter; its base weights frozen. A target that matches no
    module is a ValueError naming it and the model's linear layers."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, use_rslora=use_rslora,
        bias="none", task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)})
        raise ValueError(f"target_modules={target_modules}: {str(exc).splitlines()[0]}; this model's linear layers: "
                         f"{', '.join(linear)}") from None


def is_lora(module) -> bool:
    """Whether `module` (or the DeepSpeed engine around it) is a peft model."""
    if "peft" not in sys.modules:  # nothing made a peft model; and importing peft costs every run a second
        return False
    from peft import PeftModel

    return isinstance(getattr(module, "module", module), PeftModel)


def causal_lm(module):
    """The transformers model inside `module`: a peft model's base model (with its adapters in place and active),
    anything else unchanged. Sampling and log-probs call the transformers model directly (its forward signature is
    the one they inspect)."""
    return module.get_base_model() if is_lora(module) else module


@contextmanager
def adapters_disabled(engine) -> Iterator[object]:
    """The reference policy of a LoRA run: within the block, `engine` computes the base model (adapters off). Yields
    `engine`. Under ZeRO-3 this only flips a flag on every rank alike; the forward's collectives are unchanged."""
    with getattr(engine, "module", engine).disable_adapter():
        yield engine


def lora_scalings(module) -> dict[str, float]:
    """{qualified module name: s} for every LoRA layer of the peft model `module` (names as in its state dict)."""
    from peft.tuners.lora import LoraLayer

    return {name: layer.scaling[ADAPTER] for name, layer in module.named_modules() if isinstance(layer, LoraLayer)}


def merged_state_dict(state_dict: dict[str, torch.Tensor], scalings: dict[str, float]) -> dict[str, torch.Tensor]:
    """A peft model's state dict -> the plain transformers state dict of W + s·B·A (computed in float32, stored in W's
    dtype). Keys lose peft's `base_model.model.` prefix and `.base_layer`; adapter tensors are dropped.

    >>> W, A, B = torch.zeros(2, 3), torch.ones(1, 3), torch.tensor([[1.0], [2.0]])
    >>> sd = {"base_model.model.fc.base_layer.weight": W, "base_model.model.fc.lora_A.default.weight": A,
    ...       "base_model.model.fc.lora_B.default.weight": B}
    >>> merged_state_dict(sd, {"base_model.model.fc": 0.5})["fc.weight"].tolist()
    [[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]
    """
    unsupported = sorted(k for k in state_dict if re.search(r"\.lora_(embedding_|magnitude)", k))
    if unsupported:
        raise ValueError(f"cannot merge LoRA embedding/DoRA weights ({unsupported[0]}, ...); target linear layers only")
    merged = {}
    for key, tensor in state_dict.items():
        if ".lora_A." in key or ".lora_B." in key:
            continue
        layer, _, _ = key.rpartition(".base_layer.")
        if layer and key == f"{layer}.base_layer.weight" and layer in scalings:
            lora_a = state_dict[f"{layer}.lora_A.{ADAPTER}.weight"].float()
            lora_b = state_dict[f"{layer}.lora_B.{ADAPTER}.weight"].float()
            tensor = (tensor.float() + scalings[layer] * (lora_b @ lora_a)).to(tensor.dtype)
        merged[plain_name(key)] = tensor
    return merged


def merged_model(peft_model):
    """A plain transformers model computing the adapted model, W + s·B·A in each LoRA layer, for sampling: a decode step
    reads each weight once, where the peft model also runs two small matmuls per adapted layer (measured on
    SmolLM2-135M, 2 cores: LoRA generation 23% slower than full fine-tuning's before this). Weights that LoRA does not
    touch (embeddings, norms, the LM head) are shared with `peft_model`, not copied; the merged ones are new tensors,
    filled by `refresh_merged`. The trained W never changes (no merge and unmerge in place, so no drift)."""
    base = peft_model.get_base_model()
    with torch.device("meta"):  # the skeleton only: every tensor is assigned below (its class: custom code works too)
        plain = type(base)(copy.deepcopy(base.config))
    shared = {plain_name(name): tensor
              for name, tensor in peft_model.state_dict(keep_vars=True).items()
              if ".lora_A." not in name and ".lora_B." not in name}
    lora_weights = {f"{plain_name(name)}.weight" for name in lora_scalings(peft_model)}
    tied = {name for name in lora_weights if name in ("lm_head.weight",)} if base.config.tie_word_embeddings else set()
    if tied:
        raise ValueError("merged_model: LoRA on a tied LM head cannot be merged apart from the embedding")
    state = {name: (torch.empty_like(tensor, device=tensor.device) if name in lora_weights else tensor).detach()
             for name, tensor in shared.items()}
    plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    for name, buffer in base.named_buffers():  # non-persistent ones too (rotary inv_freq): shared, as the weights
        owner, _, attribute = name.rpartition(".")
        plain.get_submodule(owner)._buffers[attribute] = buffer
    missing = [name for name, p in [*plain.named_parameters(), *plain.named_buffers()] if p.is_meta]
    if missing:
        raise ValueError(f"merged_model: no weight for {missing[:3]}")
    plain.requires_grad_(False).eval()
    plain.generation_config = base.generation_config
    plain.config.use_cache = base.config.use_cache
    refresh_merged(peft_model, plain)
    return plain


@torch.no_grad()
def refresh_merged(peft_model, plain) -> None:
    """Write W + s·B·A of every LoRA layer of `peft_model` into `plain`'s weights (in place, after each update)."""
    from peft.tuners.lora import LoraLayer

    params = dict(plain.named_parameters())
    for name, layer in peft_model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        target = params[f"{plain_name(name)}.weight"]
        lora_a, lora_b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        merged = torch.addmm(layer.get_base_layer().weight.float(), lora_b.float(), lora_a.float(), alpha=layer.scaling[ADAPTER])
        target.copy_(merged)


class _MergedLoRALinear(torch.autograd.Function):
    """y = x·W'ᵀ + bias with W' = W + s·B·A the merged weight (one matmul), and peft's gradients for A, B and x:
    dL/dB = s·gᵀ·(x·Aᵀ), dL/dA = s·(g·B)ᵀ·x, dL/dx = g·W' (= g·W + s·(g·B)·A, peft's two paths in one), g = dL/dy.
    W' is not trained (the base W is frozen and W' is its merged copy), so it gets no gradient."""

    @staticmethod
    def forward(ctx, x, lora_a, lora_b, merged_weight, bias, scaling: float):
        ctx.save_for_backward(x, lora_a, lora_b, merged_weight)
        ctx.scaling = scaling
        return torch.nn.functional.linear(x, merged_weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, lora_a, lora_b, merged_weight = ctx.saved_tensors
        grad_x = grad_out @ merged_weight if ctx.needs_input_grad[0] else None
        flat_grad, flat_x = grad_out.reshape(-1, grad_out.shape[-1]), x.reshape(-1, x.shape[-1])
        grad_a = (flat_grad @ lora_b).t().mm(flat_x).mul_(ctx.scaling) if ctx.needs_input_grad[1] else None
        grad_b = flat_grad.t().mm(flat_x @ lora_a.t()).mul_(ctx.scaling) if ctx.needs_input_grad[2] else None
        return grad_x, grad_a, grad_b, None, None, None


def _mergeable(layer, output_embeddings) -> bool:
    """Whether peft computes `layer` as x·Wᵀ + s·(x·Aᵀ)·Bᵀ with thinkrl's one adapter: a plain Linear base, adapter
    on and unmerged, no dropout, DoRA or LoRA bias. The LM head is left alone: its checkpointed chunks
    (train/logprobs.py) are recomputed in the backward, after the block has ended."""
    from peft.tuners.lora import Linear as LoraLinear

    return (
        type(layer) is LoraLinear and layer is not output_embeddings and not layer.disable_adapters and not layer.merged
        and list(layer.active_adapters) == [ADAPTER] and isinstance(layer.get_base_layer(), torch.nn.Linear)
        and isinstance(layer.lora_dropout[ADAPTER], torch.nn.Identity) and not layer.use_dora.get(ADAPTER, False)
        and ADAPTER not in getattr(layer, "lora_variant", {}) and layer.lora_B[ADAPTER].bias is None
    )


@contextmanager
def merged_linears(peft_model, plain) -> Iterator[None]:
    """Within the block, every LoRA linear of `peft_model` computes with its merged weight from `plain` (a
    `merged_model` copy refreshed to the current adapters): one matmul where peft runs three, a scale and an add, and
    the same gradients for A and B (_MergedLoRALinear; equal up to float rounding, tests/test_lora.py). On SmolLM2-135M
    (2 cores) a LoRA micro-batch of 16 rows (forward + backward) went from 3.06-3.43 to 2.79-2.87 s
    (benchmarks/results_step_profile.md). Layers peft computes otherwise (_mergeable) keep its forward. Not under
    activation checkpointing: the recomputation runs after the block."""
    params = dict(plain.named_parameters())
    output_embeddings = peft_model.get_base_model().get_output_embeddings()
    patched = []
    try:
        for name, layer in peft_model.named_modules():
            if _mergeable(layer, output_embeddings):
                lora_a, lora_b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
                merged, bias, scaling = params[f"{plain_name(name)}.weight"], layer.get_base_layer().bias, layer.scaling[ADAPTER]
                layer.forward = (lambda x, *args, _a=lora_a, _b=lora_b, _w=merged, _bias=bias, _s=scaling, **kwargs:
                                 _MergedLoRALinear.apply(x, _a, _b, _w, _bias, _s))
                patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.forward  # the class's forward again
