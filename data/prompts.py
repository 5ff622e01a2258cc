"""The one prompt preparation: template -> text -> token ids, and the long-prompt policy.

GRPO rollouts, SFT examples, held-out evaluation (and anything else that feeds a prompt to the policy) call
:func:`prepare_prompt` / :func:`prepare_prompts`, so the three can never tokenise a prompt differently: SFT trains the
exact token boundary that GRPO later samples at, and evaluation scores the prompts GRPO trained on.

The special-token rule lives here only. A chat template writes the model's own special tokens itself (e.g. Llama's
``{{ bos_token }}``), so a ``chat`` prompt is tokenised with ``add_special_tokens=False`` (a second BOS otherwise);
``r1_zero`` / ``plain`` prompts have none and take the tokenizer's default special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data.templates import Messages, render_prompt

LONG_PROMPT_POLICIES = ("error", "drop")


class PromptTooLongError(ValueError):
    """Prompts over the length limit under the `error` policy; the message names the first such row."""


def adds_special_tokens(template: str) -> bool:
    """Whether prompts of `template` are tokenised with the tokenizer's special tokens (see the module docstring)."""
    return template != "chat"


def encode_prompt(text: str, tokenizer: Any, *, template: str) -> list[int]:
    """Token ids of a rendered prompt, by the one rule above."""
    return tokenizer(text, add_special_tokens=adds_special_tokens(template))["input_ids"]


def prepare_prompt(
    question: str | Messages, tokenizer: Any, *, template: str, system_prompt: str | None, prefill_think: bool,
    prefill_answer: bool = False,
) -> tuple[str, list[int]]:
    """(rendered text, token ids) of one prompt."""
    text = render_prompt(question, tokenizer, template=template, system_prompt=system_prompt, prefill_think=prefill_think,
                         prefill_answer=prefill_answer)
    return text, encode_prompt(text, tokenizer, template=template)


@dataclass
class PreparedPrompts:
    """The prompts that were kept, in input order."""

    texts: list[str]  # [B] rendered prompts
    ids: list[list[int]]  # [B][P_b] their token ids
    kept: list[int]  # [B] index of each kept prompt in the input
    num_dropped: int  # prompts over the limit under the `drop` policy
    longest: int  # tokens of the longest prompt of the input, kept or not


def prepare_prompts(
    questions: list[str | Messages],
    tokenizer: Any,
    *,
    template: str,
    system_prompt: str | None,
    prefill_think: bool,
    prefill_answer: bool = False,
    max_prompt_length: int | None = None,
    on_long_prompt: str = "error",
) -> PreparedPrompts:
    """Render and tokenise every question; a prompt over `max_prompt_length` tokens raises PromptTooLongError
    (`on_long_prompt="error"`, naming the first such row) or is dropped and counted (`"drop"`)."""
    if on_long_prompt not in LONG_PROMPT_POLICIES:
        raise ValueError(f"on_long_prompt must be one of {LONG_PROMPT_POLICIES}, got {on_long_prompt!r}")
    texts = [
        render_prompt(q, tokenizer, template=template, system_prompt=system_prompt, prefill_think=prefill_think,
                      prefill_answer=prefill_answer)
        for q in questions
    ]
    ids = tokenizer(texts, add_special_tokens=adds_special_tokens(template))["input_ids"] if texts else []
    lengths = [len(row) for row in ids]
    limit = max_prompt_length if max_prompt_length is not None else max(lengths, default=0)
    too_long = [i for i, n in enumerate(lengths) if n > limit]
    if too_long and on_long_prompt == "error":
        first = too_long[0]
        raise PromptTooLongError(
            f"{len(too_long)} of {len(lengths)} prompts are longer than data.max_prompt_length={limit} tokens (row "
            f"{first}: {lengths[first]} tokens); raise the limit or set data.on_long_prompt=drop"
        )
    kept = [i for i, n in enumerate(lengths) if n <= limit]
    return PreparedPrompts(
        texts=[texts[i] for i in kept], ids=[ids[i] for i in kept], kept=kept, num_dropped=len(lengths) - len(kept),
        longest=max(lengths, default=0),
    )
