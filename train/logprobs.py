"""Log-probabilities of completion tokens without materialising an [N, L, V] float32 logits tensor.

The decoder runs once to give hidden states [N, P+L, H]; the LM head is then applied to chunks of `chunk_size`
completion tokens, each chunk's log-softmax taken in float32 and reduced to one number per token. Under autograd each
chunk is wrapped in activation checkpointing, so its [chunk, V] logits are freed after the forward and recomputed in
the backward: peak extra memory is one chunk's logits, whatever V is (Liger-Kernel's fused linear cross-entropy and
TRL's `selective_log_softmax` make the same trade).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[N, T] positions that skip left padding, the same ones HF `generate` uses, so sampled and recomputed
    log-probs agree (without them a left-padded row would be shifted by its padding)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def _chunk_logprobs(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float):
    """hidden [C, H], targets [C] -> (logprobs [C], entropy [C]) in float32."""
    logits = lm_head(hidden).float() / temperature  # [C, V]
    log_norm = torch.logsumexp(logits, dim=-1)  # [C]
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_norm
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = log_norm - (probs * logits).sum(dim=-1)
    return logprobs, entropy


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    *,
    temperature: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of every completion token.

    model: an HF causal LM (or a DeepSpeed engine around one). input_ids, attention_mask: [N, P+L], prompt left-padded,
    completion in the last L = completion_length columns. Logits are divided by `temperature`, matching the sampler.
    Returns (logprobs [N, L] with grad when enabled, entropy [N, L] detached).
    """
    hf_model = getattr(model, "module", model)
    decoder = hf_model.get_decoder()
    lm_head = hf_model.get_output_embeddings()
    hidden = decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state  # [N, P+L, H]
    num_rows, width = input_ids.shape[0], completion_length
    # The hidden state at position t predicts token t+1: positions P-1 .. P+L-2 predict the L completion tokens.
    hidden = hidden[:, -width - 1 : -1, :].reshape(num_rows * width, -1)  # [N*L, H]
    targets = input_ids[:, -width:].reshape(-1)  # [N*L]
    step = chunk_size if chunk_size > 0 else hidden.shape[0]
    use_checkpoint = torch.is_grad_enabled() and hidden.shape[0] > step
    logprob_chunks, entropy_chunks = [], []
    for start in range(0, hidden.shape[0], step):
        args = (lm_head, hidden[start : start + step], targets[start : start + step], temperature)
        if use_checkpoint:
            logprobs, entropy = checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            logprobs, entropy = _chunk_logprobs(*args)
        logprob_chunks.append(logprobs)
        entropy_chunks.append(entropy)
    logprobs = torch.cat(logprob_chunks).view(num_rows, width)
    entropy = torch.cat(entropy_chunks).view(num_rows, width).detach()
    return logprobs, entropy
