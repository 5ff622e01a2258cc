"""Named batch containers. Dimensions: B prompts (this rank), G group size, N = B*G completions, P prompt length
(left-padded), L completion length (right-padded), V vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RolloutBatch:
    """What sampling produced on this rank. Rows are group-major: completions of prompt b are rows b*G .. b*G+G-1."""

    input_ids: torch.Tensor  # [N, P+L] prompt (left-padded) followed by completion (right-padded)
    attention_mask: torch.Tensor  # [N, P+L] 1 for real prompt and completion tokens (completion up to and incl. EOS)
    completion_mask: torch.Tensor  # [N, L] 1 for completion tokens up to and including the first EOS
    prompt_length: int  # P
    group_size: int  # G: rows b*G .. b*G+G-1 are the completions of prompt b
    completion_texts: list[str]  # [N] decoded completions, special tokens removed
    truncated: torch.Tensor  # [N] bool: no EOS within max_completion_length

    @property
    def completion_ids(self) -> torch.Tensor:  # [N, L]
        return self.input_ids[:, self.prompt_length :]

    @property
    def completion_lengths(self) -> torch.Tensor:  # [N]
        return self.completion_mask.sum(dim=1)

    def per_completion(self, values: list) -> list:
        """[B] per-prompt values (a dataset column) -> [N], each repeated for the G completions of its prompt."""
        if len(values) * self.group_size != len(self.completion_texts):
            raise ValueError(f"{len(values)} values for {len(self.completion_texts)} completions in groups of {self.group_size}")
        return [value for value in values for _ in range(self.group_size)]


@dataclass
class TrainBatch:
    """Everything the policy update needs for one rollout batch on this rank."""

    input_ids: torch.Tensor  # [N, P+L]
    attention_mask: torch.Tensor  # [N, P+L]
    completion_mask: torch.Tensor  # [N, L] float
    advantages: torch.Tensor  # [N]
    old_logprobs: torch.Tensor | None  # [N, L] log-probs under the sampling policy; None when num_iterations == 1
    ref_logprobs: torch.Tensor | None  # [N, L] log-probs under the reference model; None when beta == 0

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
