"""The tool-call protocol (data/tool_protocol.py): finding a call, the response text and its cut, its tokens, and
splitting a trajectory into model and tool turns."""

import pytest

from data.tool_protocol import TRUNCATION_MARK, ToolProtocol


def test_markdown_call_is_found_only_when_closed():
    protocol = ToolProtocol.preset("markdown")
    assert protocol.find_call("Let me compute.\n```python\nprint(6*7)\n") is None
    assert protocol.find_call("Let me compute.\n```python\nprint(6*7)\n```") == "print(6*7)\n"
    assert protocol.find_call("no call here ```") is None
    xml = ToolProtocol.preset("xml")
    assert xml.find_call("<code>x = 1\nx + 1</code> then") == "x = 1\nx + 1"


def test_response_body_marks_status_and_cuts_to_length():
    protocol = ToolProtocol.preset("markdown", max_tool_response_length=30)
    assert protocol.response_body("42\n\n", "ok", time_limit_s=2) == "42"
    assert protocol.response_body("", "timeout", time_limit_s=2) == "TimeoutError: the cell ran past its 2 s limit"
    long = "".join(str(i % 10) for i in range(100))
    keep = 30 - len(TRUNCATION_MARK)  # 11 characters of output around the mark
    middle = protocol.response_body(long, "ok", time_limit_s=2)
    assert middle == long[:5] + TRUNCATION_MARK + long[-6:] and len(middle) == 30
    left = ToolProtocol.preset("markdown", max_tool_response_length=30, tool_response_truncate_side="left")
    assert left.response_body(long, "ok", time_limit_s=2) == TRUNCATION_MARK.lstrip("\n") + long[-keep:]
    right = ToolProtocol.preset("markdown", max_tool_response_length=30, tool_response_truncate_side="right")
    assert right.response_body(long, "ok", time_limit_s=2) == long[:keep] + TRUNCATION_MARK.rstrip("\n")


def test_response_tokens_keep_special_token_text_plain(tokenizer):
    """A program printing EOS or a chat marker gets plain-text tokens: it cannot end the row or fake a turn."""
    protocol = ToolProtocol.preset("markdown")
    ids = protocol.response_ids(tokenizer, "<|endoftext|><|im_end|>")
    assert tokenizer.eos_token_id not in ids and tokenizer.convert_tokens_to_ids("<|im_end|>") not in ids
    assert tokenizer.decode(ids) == protocol.response_text("<|endoftext|><|im_end|>")
    chat = ToolProtocol.preset("markdown", response_template="<|im_end|>\n<|im_start|>tool\n{output}<|im_end|>\n<|im_start|>assistant\n")
    ids = chat.response_ids(tokenizer, "<|im_end|>")
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 2  # the template's own markers, not the output's


def test_split_turns_recovers_model_and_tool_text():
    protocol = ToolProtocol.preset("markdown")
    first = "Compute.\n```python\nprint(6*7)\n```"
    second = "\nAgain ```python\nprint(1)\n```"
    text = first + protocol.response_text("42") + second + protocol.response_text("1") + " <answer>42</answer>"
    assert protocol.split_turns(text) == [
        (first, True), (protocol.response_text("42"), False), (second, True), (protocol.response_text("1"), False),
        (" <answer>42</answer>", True),
    ]
    assert protocol.split_turns("```python\nx\n``` no output follows") == [("```python\nx\n``` no output follows", True)]


def test_output_that_prints_the_closing_marker_stays_tool_text():
    """A program that prints ``` (markdown) or </interpreter> (xml) cannot end its response early: the marker is broken
    by a zero-width space, so SFT's label mask (split_turns) keeps the whole output out of the model's text."""
    for protocol, printed in [(ToolProtocol.preset("markdown"), "a\n```\nb ``` c"),
                              (ToolProtocol.preset("xml"), "a</interpreter>b")]:
        body = protocol.response_body(printed, "ok", time_limit_s=2)
        assert body != printed and body.replace("\u200b", "") == printed
        call = f"{protocol.call_start}print(x){protocol.call_end}"
        text = call + protocol.response_text(body) + " <answer>1</answer>"
        assert protocol.split_turns(text) == [(call, True), (protocol.response_text(body), False), (" <answer>1</answer>", True)]


def test_a_limit_shorter_than_the_truncation_mark_is_still_kept():
    long = "".join(str(i % 10) for i in range(100))
    for side, expected in [("middle", long[:8]), ("right", long[:8]), ("left", long[-8:])]:
        protocol = ToolProtocol.preset("markdown", max_tool_response_length=8, tool_response_truncate_side=side)
        assert protocol.response_body(long, "ok", time_limit_s=2) == expected


@pytest.mark.parametrize("bad", [dict(response_template="no placeholder"), dict(call_start=""),
                                 dict(tool_response_truncate_side="top")])
def test_protocol_refuses_bad_settings(bad):
    with pytest.raises(ValueError):
        ToolProtocol(**{"call_start": "<code>", "call_end": "</code>", "response_template": "{output}", **bad})
