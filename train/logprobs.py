"""Log-probabilities of completion tokens without materialising an [N, L, V] float32 logits tensor.

The decoder gives the hidden states that predict the L completion tokens; the LM head is then applied to chunks of
`chunk_size` completion tokens (fewer for large vocabularies: a chunk's logits hold at most MAX_CHUNK_LOGITS
elements), each chunk's log-softmax taken in float32 and reduced to one number per token. Under autograd each chunk is
wrapped in activation checkpointing, so its [chunk, V] logits are freed after the forward and recomputed in the
backward: peak extra memory is a few of one chunk's logits, the same whatever V is (Liger-Kernel's fused linear
cross-entropy and TRL's fused LM head make the same trade).

Shared prompts and no padding. The G completions of a group share their prompt, and completions end at different
lengths. Run as one [N, P+L] forward, every prompt goes through the decoder G times with identical results and every
row runs to the longest completion. Three forwards, the first that applies is taken:
* packed (`_packed_hidden`): one sequence holding each distinct prompt once, each followed by its group's completions
  without padding (a completion token sees its prompt and its own earlier tokens), positions restarting at each
  prompt; within MAX_PACKED_TOKENS, with sdpa/eager attention and no sliding-window layers. Attention runs segment by
  segment (train/packed_attention.py), so it computes only the pairs a token may see; under activation checkpointing a
  [T, T] block mask is used instead, and packing is then taken only when the tokens it saves pay for the T^2 pairs.
  On SmolLM2-135M (16 rows, completions of 38 tokens on average, 64 at most), with the LM head on scored tokens only,
  the update's forward + backward went from 11.3 to 7.3 s per step with the block mask; segment attention then
  took a micro-batch of 16 rows (2 prompts) from 4.06 to 3.64 s under LoRA (benchmarks/results_step_profile.md).
* shared prompt (`_shared_prompt_hidden`): each distinct prompt runs once with a KV cache, indexed out to its G rows;
  then only the completion tokens run, padded. Not under gradient checkpointing (HF turns the cache off there) or
  ZeRO-3 (each forward is a collective that all ranks must make alike, and the count would differ by rank).
* plain: one [N, P+L] forward.
Causal attention makes them the same computation: a prompt token never attends to a completion, so its hidden states
and keys/values are the same either way, and autograd sums the G rows' gradients into the one prompt forward
(tests/test_logprobs.py checks values and gradients of each against the full-logits forward).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING

import torch
from torch.utils.checkpoint import checkpoint

from train.model import activation_checkpointing
from train.packed_attention import PLAN_KWARG, segment_attention, segment_plan, supports_segment_attention

if TYPE_CHECKING:
    from train.micro_batches import MicroBatching


# One chunk's logits hold at most this many float32 elements (128 MiB), whatever the vocabulary: the chunk's token
# count is lowered for large V, so the extra memory of the log-probs stays flat as V grows instead of growing with it
# (1024 tokens x Qwen's 151,936 would be 594 MiB per [C, V] temporary, and a chunk's forward + backward holds several;
# benchmarks/results_logprob_memory.md). 2**25 leaves a 32k vocabulary at 1024 tokens per chunk.
MAX_CHUNK_LOGITS = 2**25


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[N, T] positions that skip left padding, the same ones HF `generate` uses, so sampled and recomputed
    log-probs agree (without them a left-padded row would be shifted by its padding)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def _plain_cache(hf_model):
    """An empty DynamicCache whose layers all keep every position, or None (old transformers, sliding windows)."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=hf_model.config)
        from transformers.cache_utils import DynamicLayer
    except (TypeError, ImportError):  # transformers before 4.56
        return None
    return cache if all(type(layer) is DynamicLayer for layer in cache.layers) else None


# A packed forward's sequence holds at most this many tokens: under activation checkpointing its [T, T] attention mask
# (4 bytes an entry) stays under 64 MiB, and otherwise one forward's activations stay bounded. Longer micro-batches
# take the padded forward (make them smaller with optim.micro_batch_size or a token budget).
MAX_PACKED_TOKENS = 4096


def _packed_hidden(hf_model, decoder, input_ids, attention_mask, width: int) -> torch.Tensor | None:
    """Hidden states [K, H] that predict the K scored completion tokens (attention mask 1 in the last `width` columns,
    in row-major order), from ONE forward of a single packed sequence without padding: each distinct prompt's tokens
    once, followed by the completions of its group (each without its last token, which predicts nothing). A completion
    token sees its group's prompt and its own earlier tokens only (segment attention, or a block mask under activation
    checkpointing), and positions restart at each prompt, so every token computes what it computes in the padded
    [N, P+L] forward (causal attention, the same positions); no padding position and no repeated prompt runs through
    the decoder. None where the padded forward is used instead: flash-attention (it takes position-id resets, not
    block masks), sliding-window layers (the segments and the block mask would override the window), a packed
    sequence over MAX_PACKED_TOKENS.

    One forward per call whatever the rows hold, so under ZeRO-3 every rank makes the same collectives."""
    prompt_width = input_ids.shape[1] - width
    if prompt_width < 1 or hf_model.config._attn_implementation not in ("sdpa", "eager") or _plain_cache(hf_model) is None:
        return None
    prompt_mask = attention_mask[:, :prompt_width].bool()
    completion_mask = attention_mask[:, prompt_width:]
    completion_lengths = completion_mask.sum(dim=1)  # [N]
    columns = torch.arange(width, device=completion_mask.device)
    if not torch.equal(completion_mask.bool(), columns[None, :] < completion_lengths[:, None]):
        return None  # not right-padded (a hole in a completion): the packed layout assumes the first n are real
    completion_lengths = completion_lengths.tolist()
    _, group = torch.unique(torch.cat([input_ids[:, :prompt_width], prompt_mask.to(input_ids.dtype)], dim=1), dim=0,
                            return_inverse=True)
    group = group.tolist()
    first_row = {}
    for row, g in enumerate(group):
        first_row.setdefault(g, row)
    packed_ids, positions, owner = [], [], []  # owner: the row a token belongs to, -1 - g for prompt g's tokens
    prompt_segments, completion_segments = [], []  # (start, length) and (start, length, prompt number): the plan
    predictors: dict[int, torch.Tensor] = {}  # row -> packed index of the hidden state predicting each scored token
    for g in sorted(first_row):
        prompt = input_ids[first_row[g], :prompt_width][prompt_mask[first_row[g]]]
        if len(prompt) == 0:
            return None  # nothing to predict the first completion token from
        last_prompt = len(packed_ids) + len(prompt) - 1
        prompt_segments.append((len(packed_ids), len(prompt)))
        packed_ids += prompt.tolist()
        positions += range(len(prompt))
        owner += [-1 - g] * len(prompt)
        for row in (r for r, h in enumerate(group) if h == g):
            count = completion_lengths[row]
            if count == 0:
                continue
            start = len(packed_ids)
            predictors[row] = torch.tensor([last_prompt] + list(range(start, start + count - 1)))
            if count > 1:
                completion_segments.append((start, count - 1, len(prompt_segments) - 1))
            packed_ids += input_ids[row, prompt_width : prompt_width + count - 1].tolist()
            positions += range(len(prompt), len(prompt) + count - 1)
            owner += [row] * (count - 1)
    device = input_ids.device
    packed, padded_rows = len(packed_ids), input_ids.shape[0]
    if packed > MAX_PACKED_TOKENS:
        return None
    if supports_segment_attention(hf_model) and not activation_checkpointing(hf_model):
        # Segment attention (train/packed_attention.py) computes only the pairs a token may see, fewer than the padded
        # forward's: packing then always saves work, and no [T, T] mask exists to bound.
        attention = {PLAN_KWARG: segment_plan(prompt_segments, completion_segments, packed, device)}
        attention_block = segment_attention(hf_model)
    else:
        # With a dense block mask: one sequence of T tokens instead of N rows of P+L, fewer tokens through every linear
        # layer, but attention over T^2 pairs instead of N (P+L)^2 (SDPA does not skip masked blocks). A pair costs
        # about 4H FLOPs per layer where a token's linear layers cost about 24 H^2 (H the hidden size), so a pair is
        # worth 1/(6H) of a token: pack only when the tokens saved pay for the pairs added.
        added_pairs = packed**2 - padded_rows * input_ids.shape[1] ** 2
        if added_pairs > 6 * hf_model.config.hidden_size * (padded_rows * input_ids.shape[1] - packed):
            return None
        owner_t = torch.tensor(owner, device=device)
        token_group = torch.where(owner_t < 0, -1 - owner_t, torch.tensor(group, device=device)[owner_t.clamp(min=0)])
        causal = torch.ones(len(owner), len(owner), dtype=torch.bool, device=device).tril()
        # key k is visible to query q: causal, same group, and k is a prompt token or a token of q's own completion
        visible = causal & (token_group[:, None] == token_group[None, :]) & ((owner_t[None, :] < 0) | (owner_t[:, None] == owner_t[None, :]))
        dtype = decoder.get_input_embeddings().weight.dtype  # SDPA wants the mask in the queries' dtype
        mask = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, torch.finfo(dtype).min)
        attention, attention_block = {"attention_mask": mask[None, None]}, contextlib.nullcontext()
    with attention_block:
        hidden = decoder(
            input_ids=torch.tensor([packed_ids], device=device), position_ids=torch.tensor([positions], device=device),
            use_cache=False, **attention,
        ).last_hidden_state[0]  # [T, H]
    # Row-major, as the scored positions are listed (groups are packed in torch.unique's order, not the rows').
    return hidden[torch.cat([predictors[row] for row in sorted(predictors)]).to(device)] if predictors else hidden[:0]


def _shared_prompt_hidden(hf_model, decoder, input_ids, attention_mask, width: int, *, sharded: bool) -> torch.Tensor | None:
    """Hidden states [N, L, H] that predict the L completion tokens, with each distinct prompt run once (module
    docstring); None where the plain forward is to be used instead. `sharded` (ZeRO-3, Engine.sharded): every decoder
    forward all-gathers the parameters, a collective, so all ranks must make the same number of forwards; whether
    prompts are shared, and whether L = 1, differ per rank, so the plain forward is used."""
    prompt_width = input_ids.shape[1] - width
    if prompt_width < 1 or activation_checkpointing(hf_model) or sharded:
        return None
    prompt_ids, prompt_mask = input_ids[:, :prompt_width], attention_mask[:, :prompt_width]
    _, group = torch.unique(torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1), dim=0, return_inverse=True)
    num_prompts = int(group.max()) + 1
    if num_prompts == input_ids.shape[0]:
        return None  # nothing shared
    cache_kwarg = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    cache = _plain_cache(hf_model)
    if cache is None:
        return None
    rows = torch.arange(group.numel(), device=group.device)
    first_row = torch.full((num_prompts,), group.numel(), device=group.device).scatter_reduce(0, group, rows, "amin")  # [U]
    positions = position_ids_from_mask(attention_mask)  # [N, P+L]
    prompt_hidden = decoder(
        input_ids=prompt_ids[first_row], attention_mask=prompt_mask[first_row], position_ids=positions[first_row, :prompt_width],
        use_cache=True, **{cache_kwarg: cache},
    ).last_hidden_state  # [U, P, H]
    last_prompt_hidden = prompt_hidden[group, -1:]  # [N, 1, H]: predicts the first completion token
    if width == 1:
        return last_prompt_hidden
    cache.batch_select_indices(group)  # [U, ...] -> [N, ...], differentiable indexing: gradients add up per prompt
    # Completion tokens 0 .. L-2 predict tokens 1 .. L-1 (the last token predicts nothing we score).
    completion_hidden = decoder(
        input_ids=input_ids[:, prompt_width:-1], attention_mask=attention_mask[:, :-1], position_ids=positions[:, prompt_width:-1],
        use_cache=True, **{cache_kwarg: cache},
    ).last_hidden_state  # [N, L-1, H]
    return torch.cat([last_prompt_hidden, completion_hidden], dim=1)


def _chunk_logprobs(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool):
    """hidden [C, H], targets [C] -> (logprobs [C], entropy [C] or None) in float32. Each [C, V] temporary counts against
    MAX_CHUNK_LOGITS, so the in-place ops below are deliberate (the linear's backward needs its input, not its output)."""
    logits = lm_head(hidden).float()  # [C, V]
    if temperature != 1.0:
        logits = logits.div_(temperature)
    log_norm = torch.logsumexp(logits, dim=-1)  # [C]
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_norm
    if not with_entropy:
        return logprobs, None
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = log_norm - probs.mul_(logits).sum(dim=-1)
    return logprobs, entropy


def chunk_tokens(chunk_size: int, vocab_size: int, num_tokens: int) -> int:
    """Tokens per LM-head chunk: `chunk_size` (0 = all `num_tokens` in one chunk), lowered so that one chunk's
    [C, V] logits hold at most MAX_CHUNK_LOGITS elements.

    >>> chunk_tokens(1024, 263, 5000), chunk_tokens(1024, 151_936, 5000), chunk_tokens(0, 151_936, 5000)
    (1024, 220, 5000)
    """
    if chunk_size <= 0:
        return num_tokens
    return max(1, min(chunk_size, MAX_CHUNK_LOGITS // vocab_size))


def lm_head_logprobs(
    hf_model, hidden: torch.Tensor, targets: torch.Tensor, *, temperature: float, chunk_size: int, with_entropy: bool = True,
    sharded: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one chunked LM head, for GRPO and SFT alike: hidden [K, H] predicting targets [K] -> (log p(target) [K],
    entropy [K] detached, or None without `with_entropy`), float32.

    Chunks of `chunk_tokens(chunk_size, V, K)` rows (capped by MAX_CHUNK_LOGITS); under autograd each chunk runs under
    activation checkpointing, so its [C, V] logits are freed after the forward and recomputed in the backward.
    `sharded`: the parameters are ZeRO-3 shards (Engine.sharded), so every rank makes the same number of head calls."""
    lm_head = hf_model.get_output_embeddings()
    vocab_size = getattr(lm_head, "out_features", None) or hf_model.config.vocab_size  # ZeRO-3 empties .weight
    num_tokens = targets.numel()
    if num_tokens == 0 and not sharded:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    step = chunk_tokens(chunk_size, vocab_size, max(num_tokens, 1))
    num_chunks = -(-num_tokens // step)
    if sharded:
        # Every LM-head call all-gathers its weight under ZeRO-3 (and its backward reduce-scatters the gradient): all
        # ranks must make as many calls, whatever their own token counts (trimmed or token-budget micro-batches, SFT
        # labels). Ranks with fewer tokens run empty chunks.
        from train.distributed import all_reduce_max

        num_chunks = int(all_reduce_max(torch.tensor([num_chunks], dtype=torch.float64, device=hidden.device)).item())
    use_checkpoint = torch.is_grad_enabled() and num_chunks > 1
    if sharded and not any(p.requires_grad for p in lm_head.parameters()):
        # A frozen LM head (LoRA) under ZeRO-3 is not re-gathered when the backward recomputes a checkpointed chunk (the
        # recomputation would see a 0-element placeholder): gather it once into a plain tensor for this call.
        from train.engine import gathered_linear

        lm_head = gathered_linear(lm_head)
    logprob_chunks, entropy_chunks = [], []
    for start in range(0, num_chunks * step, step):
        args = (lm_head, hidden[start : start + step], targets[start : start + step], temperature, with_entropy)
        logprobs, entropy = checkpoint(_chunk_logprobs, *args, use_reentrant=False) if use_checkpoint else _chunk_logprobs(*args)
        logprob_chunks.append(logprobs)
        entropy_chunks.append(entropy)
    entropy = torch.cat(entropy_chunks).detach() if with_entropy else None
    return torch.cat(logprob_chunks), entropy


def completion_logprobs(
    hf_model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    *,
    temperature: float,
    chunk_size: int,
    sharded: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of every completion token.

    hf_model: a transformers causal LM (Engine.hf_module; `sharded` = Engine.sharded). input_ids, attention_mask: [N, P+L], prompt left-padded,
    completion in the last L = completion_length columns. Logits are divided by `temperature`, matching the sampler.
    Returns (logprobs [N, L] with grad when enabled, entropy [N, L] detached), 0 at padding positions (attention
    mask 0 in the completion part).
    """
    decoder = hf_model.get_decoder()
    num_rows, width = input_ids.shape[0], completion_length
    targets = input_ids[:, -width:].reshape(-1)  # [N*L]
    # The LM head (a V x H matmul per token, forward and backward) runs only where a completion token is scored: the
    # attention mask's completion part, up to and including EOS. Padding positions get 0. With completions of unequal
    # length this drops the head's work on padding, e.g. half of it when the mean completion is half the longest.
    scored = attention_mask[:, -width:].reshape(-1).bool()  # [N*L]
    index = scored.nonzero().squeeze(1)  # [K]
    hidden = _packed_hidden(hf_model, decoder, input_ids, attention_mask, width)  # [K, H], or None
    if hidden is None:
        hidden = _shared_prompt_hidden(hf_model, decoder, input_ids, attention_mask, width, sharded=sharded)
        if hidden is None:
            hidden = decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            ).last_hidden_state  # [N, P+L, H]
            # The hidden state at position t predicts token t+1: positions P-1 .. P+L-2 predict the L completion tokens.
            hidden = hidden[:, -width - 1 : -1, :]
        hidden = hidden.reshape(num_rows * width, -1)[index]  # [K, H]
    scored_logprobs, scored_entropy = lm_head_logprobs(hf_model, hidden, targets[index], temperature=temperature,
                                                       chunk_size=chunk_size, sharded=sharded)
    logprobs = scored_logprobs.new_zeros(num_rows * width).index_put((index,), scored_logprobs)  # differentiable
    entropy = scored_entropy.new_zeros(num_rows * width).index_put_((index,), scored_entropy)
    return logprobs.view(num_rows, width), entropy.view(num_rows, width)


@torch.no_grad()
def sequence_logprobs(hf_model, input_ids, attention_mask, completion_length: int, *, micro_batching: "MicroBatching",
                      temperature: float, chunk_size: int, sharded: bool = False) -> torch.Tensor:
    """[N, L] log-probs under `hf_model` without grad (old policy or reference), in `micro_batching`'s micro-batches
    (a row count or a token budget, train/micro_batches.py; collective with a budget). Each micro-batch is trimmed
    to its own widths; positions past a row's completion (padding) get 0."""
    from train.micro_batches import padding_bounds

    plan = micro_batching.plan(attention_mask, attention_mask[:, -completion_length:])
    out = torch.zeros(input_ids.shape[0], completion_length, dtype=torch.float32, device=input_ids.device)
    prompt_width = input_ids.shape[1] - completion_length
    for rows in plan:
        index = torch.tensor(rows, dtype=torch.long, device=input_ids.device)
        ids, mask = input_ids[index], attention_mask[index]
        first, keep = padding_bounds(mask[:, :prompt_width], mask[:, prompt_width:])
        logprobs, _ = completion_logprobs(
            hf_model, ids[:, first : prompt_width + keep], mask[:, first : prompt_width + keep], keep,
            temperature=temperature, chunk_size=chunk_size, sharded=sharded,
        )
        out[index, :keep] = logprobs.float()
    return out
