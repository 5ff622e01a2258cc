"""Turn a question (or a list of chat messages) into the prompt string the policy continues.

Templates (:data:`TEMPLATES`):

* ``r1_zero``: DeepSeek-R1-Zero's template for base models (DeepSeek-AI, "DeepSeek-R1", arXiv:2501.12948, Table 1),
  word for word except one thing: the paper writes ``User: prompt. Assistant:``; we add that ``.`` only when the
  question does not already end in ``.``, ``?`` or ``!`` (no ``"...?. Assistant:"``).
* ``chat``: ``tokenizer.apply_chat_template([system?, user], tokenize=False, add_generation_prompt=True)``, for
  instruct models.
* ``plain``: the question as is, with the system prompt (if any) and a blank line on top.

``prefill_think`` ends the prompt with an opened ``<think>`` tag, as TinyZero's countdown prompt
(Jiayi Pan, TinyZero ``examples/data_preprocess/countdown.py`` at f36b1b8: ``...Assistant: Let me solve this step by
step.\\n<think>``) and Dr. GRPO's r1 template (sail-sg/understand-r1-zero ``train_zero_math.py::apply_r1_template`` at
14046dc: ``\\nAssistant: <think>``) do. It makes a base model start reasoning at once, but the completion then
begins *inside* the think block and has no opening ``<think>``: a format reward must prepend ``"<think>"`` to the
completion before matching ``<think>...</think>``.
It has no default here: the config's ``data.prefill_think`` (default ``True``) is the one place that chooses it.
``False`` leaves the prompt exactly as in the paper, so the completion carries the whole tag structure.

``prefill_answer`` ends the prompt with an opened ``<answer>`` tag instead, for "answer directly" prompts: the
completion *is* the answer. A small instruct model that never writes the tags it is asked for (SmolLM2-135M-Instruct
writes "The answer is ..." or explains) then answers in the slot every verifier reads, whatever the answer's type;
rewards see ``<answer>`` + the completion (rewards/combine.py). The two prefills exclude each other.

Tokenising the result is :mod:`data.prompts`'s job (one rule for GRPO, SFT and evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TEMPLATES = ("r1_zero", "chat", "plain")

R1_ZERO_INSTRUCTION = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning "
    "process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)
"""Table 1 of arXiv:2501.12948, up to ``User:``. A ``system_prompt`` given with ``r1_zero`` replaces it."""

Messages = Sequence[Mapping[str, Any]]


def render_prompt(
    question: str | Messages,
    tokenizer: Any,
    *,
    template: str,
    system_prompt: str | None = None,
    prefill_think: bool,
    prefill_answer: bool = False,
) -> str:
    """Render one prompt (see module docstring for the templates).

    Args:
        question: the question text, or a list of ``{"role", "content"}`` chat messages. ``r1_zero`` and ``plain``
            accept messages only when they are a single user message (its content is used).
        tokenizer: a ``transformers`` tokenizer with a ``chat_template``; only ``chat`` uses it (``None`` is fine
            for the others).
        template: one of :data:`TEMPLATES`.
        system_prompt: ``chat``: a system message put first (an error if the messages already have one);
            ``plain``: a paragraph on top; ``r1_zero``: replaces :data:`R1_ZERO_INSTRUCTION`.
        prefill_think: end the prompt with an opened ``<think>``.
        prefill_answer: end the prompt with an opened ``<answer>`` (not with ``prefill_think``).
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; allowed: {', '.join(TEMPLATES)}")
    if prefill_think and prefill_answer:
        raise ValueError("prefill_think and prefill_answer exclude each other: the completion starts in one block")
    if template == "chat":
        prompt = _render_chat(question, tokenizer, system_prompt)
        if prefill_think and not prompt.rstrip().endswith("<think>"):  # R1-distill templates already prefill it.
            prompt += "<think>\n"
        return prompt + ("<answer>" if prefill_answer else "")

    text = _question_text(question, template)
    if template == "r1_zero":
        end = "" if text.endswith((".", "?", "!")) else "."
        instruction = R1_ZERO_INSTRUCTION if system_prompt is None else system_prompt
        return f"{instruction} User: {text}{end} Assistant:" + (" <think>" if prefill_think else "") + (
            " <answer>" if prefill_answer else "")
    prompt = text if system_prompt is None else f"{system_prompt}\n\n{text}"
    return prompt + ("\n<think>" if prefill_think else "") + ("\n<answer>" if prefill_answer else "")


def _render_chat(question: str | Messages, tokenizer: Any, system_prompt: str | None) -> str:
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        raise ValueError(
            f"template='chat' needs a tokenizer with a chat_template, and {name!r} has none (base models usually "
            "don't); use template='r1_zero' or 'plain', or set tokenizer.chat_template"
        )
    if isinstance(question, str):
        messages = [{"role": "user", "content": question}]
    else:
        messages = [dict(m) for m in _check_messages(question)]
    if system_prompt is not None:
        if messages and messages[0]["role"] == "system":
            raise ValueError("system_prompt given but the messages already start with a system message")
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _question_text(question: str | Messages, template: str) -> str:
    if isinstance(question, str):
        return question.strip()
    messages = _check_messages(question)
    if len(messages) != 1 or messages[0]["role"] != "user":
        raise ValueError(
            f"template={template!r} needs a question string or a single user message, got {len(messages)} messages "
            f"with roles {[m['role'] for m in messages]}; use template='chat' for conversations"
        )
    return str(messages[0]["content"]).strip()


def _check_messages(messages: Messages) -> Messages:
    if not isinstance(messages, Sequence) or not all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in messages
    ):
        raise ValueError(f"question must be a string or a list of {{'role', 'content'}} messages, got {messages!r}")
    return messages
