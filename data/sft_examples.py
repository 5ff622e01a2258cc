"""SFT data: prompt/completion rows -> tokenised examples -> packed rows -> collated batches (train/sft.py trains on them).

* `tokenize_example`: the prompt prepared by `data.prompts.prepare_prompt` (the same text and token ids that GRPO
  samples from and evaluation scores), the completion tokenised on its own and appended, then EOS. Prompt and
  completion are tokenised separately, as the rollout does (prompt ids, then sampled ids), so SFT trains exactly the
  token boundary that GRPO later samples at. **Completion-only loss**: labels are -100 on prompt tokens (TRL
  `completion_only_loss`).
* `pack_examples` / `collate_rows`: **packing** (greedy, in order) of examples into rows of at most `max_length`
  tokens. Every example keeps its own positions (`position_ids` restart at 0) and sees only itself: rows carry
  segment ids, from which `block_causal_mask` makes a 4-D block-diagonal causal mask [R, 1, T, T] for `eager` /
  `sdpa`, which transformers passes through unchanged; `flash_attention_2` gets no mask and splits sequences at the
  position-id resets instead (HF's `DataCollatorWithFlattening` convention). No loss crosses an example: an example's
  first token is a prompt token (label -100), so the last token of the previous example predicts nothing. Without
  packing a row is one example.
* `step_rows`: which rows each optimiser step takes (seeded per-epoch permutations), the same on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.prompts import prepare_prompt
from data.tool_protocol import ToolProtocol
from data.traces import strip_prefilled_think

IGNORE_INDEX = -100  # label of a token that is not trained on (prompt, padding): PyTorch / HF cross-entropy convention
PAD_SEGMENT = -1  # segment id of padding; padding attends only to padding (no row is fully masked, so no NaN)


@dataclass
class SFTExample:
    input_ids: list[int]  # [T_i] prompt tokens, completion tokens, EOS
    labels: list[int]  # [T_i] IGNORE_INDEX on prompt tokens, the token itself on completion tokens and EOS


@dataclass
class SFTBatch:
    """R rows of T tokens; a row holds one example (no packing) or several (packing), right-padded."""

    input_ids: torch.Tensor  # [R, T]
    labels: torch.Tensor  # [R, T] IGNORE_INDEX where no loss (prompt, padding)
    position_ids: torch.Tensor  # [R, T] restart at 0 at every example; padding continues from 0 as its own segment
    segment_ids: torch.Tensor  # [R, T] 0, 1, ... = example within the row; PAD_SEGMENT on padding

    @property
    def completion_mask(self) -> torch.Tensor:  # [R, T] 1.0 on the tokens that are trained on
        return (self.labels != IGNORE_INDEX).float()

    def rows(self, start: int, end: int) -> "SFTBatch":
        return SFTBatch(*(t[start:end] for t in (self.input_ids, self.labels, self.position_ids, self.segment_ids)))


# ---------------------------------------------------------------------------------------------------------------------
# Data: tokenise, pack, collate


def tokenize_example(
    prompt, completion: str, tokenizer, *, template: str, system_prompt: str | None, prefill_think: bool,
    tool_protocol: ToolProtocol | None = None,
) -> SFTExample:
    """One example: rendered prompt + completion + EOS, labels IGNORE_INDEX on the prompt.

    A completion that starts with `<think>` after a prompt that already ends with `<think>` loses that tag
    (`data.traces.strip_prefilled_think`), so full traces from any source fit a prefilled prompt.

    With `tool_protocol` (rollout.tools is set), the tool's responses in the completion are context, not targets
    (SimpleTIR's mask_tool_output): they get IGNORE_INDEX labels and the very tokens a rollout appends
    (`ToolProtocol.response_ids`), and the model's turns are tokenised one by one, as the rollout samples them.
    """
    text, prompt_ids = prepare_prompt(prompt, tokenizer, template=template, system_prompt=system_prompt, prefill_think=prefill_think)
    completion = strip_prefilled_think(completion, text)
    turns = [(completion, True)] if tool_protocol is None else tool_protocol.split_turns(completion)
    completion_ids, labels = [], []
    for segment, by_model in turns:
        if by_model:
            ids = tokenizer(segment, add_special_tokens=False)["input_ids"]
        else:
            body = segment[len(tool_protocol.response_prefix) :]
            if tool_protocol.response_suffix and body.endswith(tool_protocol.response_suffix):
                body = body[: -len(tool_protocol.response_suffix)]
            ids = tool_protocol.response_ids(tokenizer, body)
        completion_ids += ids
        labels += ids if by_model else [IGNORE_INDEX] * len(ids)
    if not prompt_ids:
        raise ValueError(f"empty prompt after rendering {prompt!r}")  # packing relies on a masked first token
    eos = [tokenizer.eos_token_id]
    return SFTExample(input_ids=prompt_ids + completion_ids + eos, labels=[IGNORE_INDEX] * len(prompt_ids) + labels + eos)


def build_examples(rows: list[dict], tokenizer, *, template: str, system_prompt: str | None, prefill_think: bool,
                   max_length: int, tool_protocol: ToolProtocol | None = None) -> tuple[list[SFTExample], int]:
    """Tokenised examples from rows `{prompt, completion}`, and how many were dropped for exceeding `max_length`
    (dropped, not cut: a cut completion would teach the model to stop without EOS or answer)."""
    examples = [
        tokenize_example(row["prompt"], row["completion"], tokenizer, template=template, system_prompt=system_prompt,
                         prefill_think=prefill_think, tool_protocol=tool_protocol)
        for row in rows
    ]
    kept = [ex for ex in examples if len(ex.input_ids) <= max_length]
    return kept, len(examples) - len(kept)


def pack_examples(examples: list[SFTExample], max_length: int) -> list[list[SFTExample]]:
    """Greedy packing in order: each row takes examples until the next would exceed `max_length` tokens.

    >>> ex = lambda n: SFTExample([0] * n, [0] * n)
    >>> [[len(e.input_ids) for e in row] for row in pack_examples([ex(3), ex(4), ex(2), ex(6)], 8)]
    [[3, 4], [2, 6]]
    """
    rows: list[list[SFTExample]] = []
    used = max_length
    for example in examples:
        n = len(example.input_ids)
        if n > max_length:
            raise ValueError(f"example of {n} tokens exceeds max_length={max_length}")
        if used + n > max_length:
            rows.append([])
            used = 0
        rows[-1].append(example)
        used += n
    return rows


def collate_rows(rows: list[list[SFTExample]], pad_token_id: int) -> SFTBatch:
    """Right-pad the rows to the longest one; position ids restart and segment ids count up at every example."""
    width = max(sum(len(ex.input_ids) for ex in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.full(shape, PAD_SEGMENT, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for segment, example in enumerate(row):
            n = len(example.input_ids)
            input_ids[r, start : start + n] = torch.tensor(example.input_ids)
            labels[r, start : start + n] = torch.tensor(example.labels)
            position_ids[r, start : start + n] = torch.arange(n)
            segment_ids[r, start : start + n] = segment
            start += n
        position_ids[r, start:] = torch.arange(width - start)
    return SFTBatch(input_ids, labels, position_ids, segment_ids)


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[R, T] segment ids -> [R, 1, T, T] additive mask: 0 where query q may see key k (same segment, k <= q), the
    dtype's minimum elsewhere. Additive float works for both `eager` (added to the scores) and `sdpa` (attn_mask).

    >>> block_causal_mask(torch.tensor([[0, 0, 1]]), torch.float32)[0, 0].eq(0).int().tolist()
    [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    width = segment_ids.shape[1]
    same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)  # [R, T(q), T(k)]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (same & causal).unsqueeze(1)
    return torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device).masked_fill(~allowed, torch.finfo(dtype).min)


def step_rows(num_rows: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Row indices of optimiser step `step` (0-based), the same on every rank: a stream of seeded per-epoch
    permutations, cut into consecutive batches (a batch may straddle two epochs; no row is dropped)."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, num_rows)
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        indices.append(int(torch.randperm(num_rows, generator=generator)[offset]))
    return indices
