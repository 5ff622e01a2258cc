"""data.templates: exact rendered strings for r1_zero / chat / plain; chat uses a tokenizer built here, offline."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from data.templates import R1_ZERO_INSTRUCTION, TEMPLATES, render_prompt

# A Zephyr-like template: enough Jinja to show that roles, order and the generation prompt come through.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Table 1 of arXiv:2501.12948, typed out again here so the test does not just compare the constant with itself.
PAPER_TEXT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning "
    "process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> "
    "reasoning process here </think> <answer> answer here </answer>. User: {q}. Assistant:"
)


def _tokenizer(chat_template: str | None = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "what": 1, "is": 2, "2": 3, "+": 4, "3": 5, "?": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = chat_template
    return tokenizer


def test_r1_zero_is_the_paper_template():
    assert R1_ZERO_INSTRUCTION + " User: {q}. Assistant:" == PAPER_TEXT
    assert render_prompt("Add 2 and 3", None, template="r1_zero", prefill_think=False) == PAPER_TEXT.format(q="Add 2 and 3")
    # Our one deviation: no "." after a question that already ends a sentence.
    assert render_prompt("What is 2 + 3? ", None, template="r1_zero", prefill_think=False).endswith(" User: What is 2 + 3? Assistant:")


def test_r1_zero_prefill_and_system_prompt():
    prompt = render_prompt("Add 2 and 3", None, template="r1_zero", prefill_think=True)
    assert prompt == PAPER_TEXT.format(q="Add 2 and 3") + " <think>"
    custom = render_prompt("Add 2 and 3", None, template="r1_zero", system_prompt="Answer in <answer> tags.", prefill_think=False)
    assert custom == "Answer in <answer> tags. User: Add 2 and 3. Assistant:"


def test_chat_renders_through_the_tokenizer_template():
    tokenizer = _tokenizer()
    assert render_prompt("What is 2 + 3?", tokenizer, template="chat", prefill_think=False) == (
        "<|user|>\nWhat is 2 + 3?</s>\n<|assistant|>\n"
    )
    assert render_prompt("What is 2 + 3?", tokenizer, template="chat", system_prompt="Think.", prefill_think=False) == (
        "<|system|>\nThink.</s>\n<|user|>\nWhat is 2 + 3?</s>\n<|assistant|>\n"
    )
    assert render_prompt("What is 2 + 3?", tokenizer, template="chat", prefill_think=True).endswith(
        "<|assistant|>\n<think>\n"
    )


def test_prefill_answer_opens_the_answer_tag_in_every_template():
    tokenizer = _tokenizer()
    assert render_prompt("What is 2 + 3?", tokenizer, template="chat", prefill_think=False, prefill_answer=True) == (
        "<|user|>\nWhat is 2 + 3?</s>\n<|assistant|>\n<answer>"
    )
    assert render_prompt("Add 2 and 3", None, template="r1_zero", prefill_think=False, prefill_answer=True) == (
        PAPER_TEXT.format(q="Add 2 and 3") + " <answer>"
    )
    assert render_prompt("Add 2 and 3", None, template="plain", prefill_think=False, prefill_answer=True) == (
        "Add 2 and 3\n<answer>"
    )
    with pytest.raises(ValueError, match="exclude each other"):
        render_prompt("Add 2 and 3", None, template="plain", prefill_think=True, prefill_answer=True)


def test_chat_accepts_messages_and_prepends_the_system_prompt():
    tokenizer = _tokenizer()
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "2+3?"},
    ]
    assert render_prompt(messages, tokenizer, template="chat", system_prompt="S", prefill_think=False) == (
        "<|system|>\nS</s>\n<|user|>\nhi</s>\n<|assistant|>\nyo</s>\n<|user|>\n2+3?</s>\n<|assistant|>\n"
    )
    assert messages[0] == {"role": "user", "content": "hi"}  # the caller's list is not modified
    with_system = [{"role": "system", "content": "A"}, {"role": "user", "content": "q"}]
    assert render_prompt(with_system, tokenizer, template="chat", prefill_think=False).startswith("<|system|>\nA</s>")
    with pytest.raises(ValueError, match="already start with a system message"):
        render_prompt(with_system, tokenizer, template="chat", system_prompt="B", prefill_think=False)


def test_chat_without_a_chat_template_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a tokenizer with a chat_template"):
        render_prompt("q", _tokenizer(chat_template=None), template="chat", prefill_think=False)
    with pytest.raises(ValueError, match="needs a tokenizer with a chat_template"):
        render_prompt("q", None, template="chat", prefill_think=False)


def test_plain():
    assert render_prompt("What is 2 + 3?", None, template="plain", prefill_think=False) == "What is 2 + 3?"
    assert render_prompt("What is 2 + 3?", None, template="plain", system_prompt="Be brief.", prefill_think=False) == (
        "Be brief.\n\nWhat is 2 + 3?"
    )
    assert render_prompt("q", None, template="plain", prefill_think=True) == "q\n<think>"


def test_non_chat_templates_take_a_single_user_message_only():
    single = [{"role": "user", "content": "Add 2 and 3"}]
    assert render_prompt(single, None, template="r1_zero", prefill_think=False) == PAPER_TEXT.format(q="Add 2 and 3")
    two = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    with pytest.raises(ValueError, match="use template='chat'"):
        render_prompt(two, None, template="plain", prefill_think=False)
    with pytest.raises(ValueError, match="list of"):
        render_prompt([{"text": "q"}], None, template="plain", prefill_think=False)


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        render_prompt("q", None, template="llama", prefill_think=False)
    assert all(name in str(err.value) for name in TEMPLATES)
