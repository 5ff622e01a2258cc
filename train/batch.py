"""Named batch containers, with the operations that keep every field together (select, concat, per_completion).

Dimensions as in the README: B prompts per step over all W ranks (rollout.prompts_per_step), G group size, P prompt
length (left-padded), L completion length (right-padded), V vocabulary. A container holds one rank's share: its
b = B/W prompts and N = b*G completions (rows)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RolloutBatch:
    """What sampling produced on this rank. Rows are group-major: completions of prompt i are rows i*G .. i*G+G-1."""

    input_ids: torch.Tensor  # [N, P+L] prompt (left-padded) followed by completion (right-padded)
    attention_mask: torch.Tensor  # [N, P+L] 1 for real prompt and completion tokens (completion up to and incl. EOS)
    completion_mask: torch.Tensor  # [N, L] 1 for completion tokens up to and including the first EOS
    prompt_length: int  # P
    group_size: int  # G: rows i*G .. i*G+G-1 are the completions of prompt i
    completion_texts: list[str]  # [N] decoded completions, special tokens removed
    truncated: torch.Tensor  # [N] bool: no EOS within max_completion_length
    # With the Python tool (train/tool_rollout.py): 1 for tokens the model sampled, 0 for tool output (context only).
    model_token_mask: torch.Tensor | None = None  # [N, L]; None: every completion token is the model's
    tool_calls: list[list[dict]] | None = None  # [N] per row: {code, output, status, seconds}
    tool_seconds: dict[str, float] | None = None  # {"tools": seconds in calls, "tool_wait": rollout stood waiting}

    @property
    def loss_token_mask(self) -> torch.Tensor:  # [N, L]: the tokens the loss, its normalisers, entropy and KL count
        return self.completion_mask if self.model_token_mask is None else self.completion_mask * self.model_token_mask

    @property
    def completion_ids(self) -> torch.Tensor:  # [N, L]
        return self.input_ids[:, self.prompt_length :]

    @property
    def completion_lengths(self) -> torch.Tensor:  # [N]
        return self.completion_mask.sum(dim=1)

    def per_completion(self, values: list) -> list:
        """[b] per-prompt values (a dataset column) -> [N], each repeated for the G completions of its prompt."""
        if len(values) * self.group_size != len(self.completion_texts):
            raise ValueError(f"{len(values)} values for {len(self.completion_texts)} completions in groups of {self.group_size}")
        return [value for value in values for _ in range(self.group_size)]

    def select_groups(self, groups: list[int]) -> "RolloutBatch":
        """The completions of prompts `groups` (indices into this rank's b prompts), in that order, whole groups."""
        rows = [g * self.group_size + i for g in groups for i in range(self.group_size)]
        index = torch.tensor(rows, dtype=torch.long, device=self.input_ids.device)
        return RolloutBatch(
            input_ids=self.input_ids[index], attention_mask=self.attention_mask[index],
            completion_mask=self.completion_mask[index.to(self.completion_mask.device)], prompt_length=self.prompt_length,
            group_size=self.group_size, completion_texts=[self.completion_texts[r] for r in rows],
            truncated=self.truncated[index.to(self.truncated.device)],
            model_token_mask=None if self.model_token_mask is None else self.model_token_mask[index.to(self.model_token_mask.device)],
            # A subset of rows owns no share of the round's tool time: who collects rounds counts it once per round
            # (train/dynamic_sampling.py), so a part carries none.
            tool_calls=None if self.tool_calls is None else [self.tool_calls[r] for r in rows], tool_seconds=None,
        )

    @staticmethod
    def concat(batches: list["RolloutBatch"], pad_token_id: int) -> "RolloutBatch":
        """The rows of `batches`, in order, as one batch: prompts left-padded and completions right-padded to the
        widest batch (padding has attention and completion mask 0)."""
        P = max(b.prompt_length for b in batches)
        L = max(b.completion_mask.shape[1] for b in batches)
        input_ids, attention_mask, completion_mask, model_mask = [], [], [], []
        tools = any(b.model_token_mask is not None for b in batches)
        for b in batches:
            prompt_ids, completion_ids = b.input_ids[:, : b.prompt_length], b.input_ids[:, b.prompt_length :]
            prompt_mask, completion_attention = b.attention_mask[:, : b.prompt_length], b.attention_mask[:, b.prompt_length :]
            input_ids.append(torch.cat([_pad_to(prompt_ids, P, pad_token_id, left=True),
                                        _pad_to(completion_ids, L, pad_token_id, left=False)], 1))
            attention_mask.append(torch.cat([_pad_to(prompt_mask, P, 0, left=True),
                                             _pad_to(completion_attention, L, 0, left=False)], 1))
            completion_mask.append(_pad_to(b.completion_mask, L, 0, left=False))
            model_mask.append(_pad_to(b.completion_mask if b.model_token_mask is None else b.model_token_mask, L, 0, left=False))
        seconds = [b.tool_seconds for b in batches if b.tool_seconds]
        return RolloutBatch(
            input_ids=torch.cat(input_ids), attention_mask=torch.cat(attention_mask), completion_mask=torch.cat(completion_mask),
            prompt_length=P, group_size=batches[0].group_size,
            completion_texts=[text for b in batches for text in b.completion_texts],
            truncated=torch.cat([b.truncated for b in batches]),
            model_token_mask=torch.cat(model_mask) if tools else None,
            tool_calls=[c for b in batches for c in (b.tool_calls or [[]] * len(b.completion_texts))] if tools else None,
            tool_seconds={k: sum(s[k] for s in seconds) for k in seconds[0]} if seconds else None,
        )


def _pad_to(tensor: torch.Tensor, width: int, value: int, *, left: bool) -> torch.Tensor:
    missing = width - tensor.shape[1]
    if missing == 0:
        return tensor
    padding = tensor.new_full((tensor.shape[0], missing), value)
    return torch.cat([padding, tensor] if left else [tensor, padding], dim=1)


@dataclass
class TrainBatch:
    """Everything the policy update needs for one rollout batch on this rank."""

    input_ids: torch.Tensor  # [N, P+L]
    attention_mask: torch.Tensor  # [N, P+L]
    completion_mask: torch.Tensor  # [N, L] float
    advantages: torch.Tensor  # [N]
    old_logprobs: torch.Tensor | None  # [N, L] log-probs under the sampling policy; None when num_iterations == 1
    ref_logprobs: torch.Tensor | None  # [N, L] log-probs under the reference model; None when beta == 0

    @classmethod
    def from_rollout(cls, rollout: RolloutBatch, kept: torch.Tensor, advantages: torch.Tensor, *,
                     mask_truncated: bool = False) -> "TrainBatch":
        """The update's batch of `rollout`: its loss mask is the model's tokens of the `kept` rows ([N] bool), less the
        truncated rows with `mask_truncated` (grpo.mask_truncated_completions). Tool output is context, never trained:
        the loss, its token counts, entropy and KL see model tokens only. old_logprobs and ref_logprobs are the
        caller's to fill."""
        kept = kept.to(rollout.completion_mask.device)
        if mask_truncated:
            kept = kept & ~rollout.truncated.to(kept.device)
        keep = kept.unsqueeze(1)
        return cls(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                   completion_mask=rollout.loss_token_mask.float() * keep, advantages=advantages,
                   old_logprobs=None, ref_logprobs=None)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: list[int]) -> "TrainBatch":
        """The micro-batch of rows `rows` (train/micro_batches.py's plan), trimmed to its own widths (`trimmed`)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.input_ids.device)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index.to(t.device)]

        return TrainBatch(
            input_ids=pick(self.input_ids), attention_mask=pick(self.attention_mask), completion_mask=pick(self.completion_mask),
            advantages=pick(self.advantages), old_logprobs=pick(self.old_logprobs), ref_logprobs=pick(self.ref_logprobs),
        ).trimmed()

    def trimmed(self) -> "TrainBatch":
        """The same rows without the columns that are padding in every row: leading prompt columns (left padding) and
        trailing completion columns (past every row's last valid token). The computation is unchanged (positions come
        from the attention mask, padding is masked, attention is causal); the forward is narrower. Keeps at least one
        completion column."""
        from train.micro_batches import padding_bounds

        width = self.completion_mask.shape[1]
        first, keep = padding_bounds(self.attention_mask[:, :-width], self.completion_mask)
        stop = self.input_ids.shape[1] - width + keep

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:, :keep]

        return TrainBatch(
            input_ids=self.input_ids[:, first:stop], attention_mask=self.attention_mask[:, first:stop],
            completion_mask=cut(self.completion_mask), advantages=self.advantages, old_logprobs=cut(self.old_logprobs),
            ref_logprobs=cut(self.ref_logprobs),
        )
