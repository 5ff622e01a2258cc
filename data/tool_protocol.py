"""How a completion calls the Python tool and how the tool's answer is written back (issue 25): the markers, the
response text, its truncation, its tokens, and splitting a finished trajectory into model and tool turns.

One protocol value serves the rollout (train/tool_rollout.py), the SFT stage (data/sft_examples.py masks tool turns
out of the labels) and the tool traces of the imperfect teacher (data/tool_traces.py), so the model is trained on
exactly the text it sees when it calls the tool. Presets:

- ``markdown`` (default; ToRL's and SimpleTIR's convention): a call is a fenced ```` ```python ```` block; the answer
  follows as an ```` ```output ```` block.
- ``xml`` (ReTool's): ``<code>…</code>``, answered by ``<interpreter>…</interpreter>``.

Any marker can be replaced (rollout.tools.call_start / call_end / response_template, the template holding
``{output}``), e.g. for a chat template's tool turn.

The response body is encoded with ``split_special_tokens=True``: a program that prints ``<|im_end|>`` or EOS gets
plain-text tokens, never the special token, so it cannot end the row or fake a turn. Only the model's own text is
searched for calls, so printing a marker cannot start one either.
"""

from __future__ import annotations

from dataclasses import dataclass

PRESETS = {
    "markdown": ("```python\n", "```", "\n```output\n{output}\n```\n"),
    "xml": ("<code>", "</code>", "\n<interpreter>\n{output}\n</interpreter>\n"),
}
TRUNCATION_MARK = "\n...(truncated)...\n"  # verl's marker for a cut tool response
TRUNCATE_SIDES = ("left", "middle", "right")


@dataclass(frozen=True)
class ToolProtocol:
    call_start: str
    call_end: str
    response_template: str  # holds "{output}" once
    max_tool_response_length: int = 256  # characters of output shown to the model (verl's name)
    tool_response_truncate_side: str = "middle"  # which part is cut (verl's name): middle keeps a traceback's last line

    def __post_init__(self):
        if not self.call_start or not self.call_end:
            raise ValueError("the tool-call markers call_start and call_end must be non-empty")
        if self.response_template.count("{output}") != 1:
            raise ValueError(f"response_template must hold {{output}} exactly once, got {self.response_template!r}")
        if self.tool_response_truncate_side not in TRUNCATE_SIDES:
            raise ValueError(f"tool_response_truncate_side must be one of {TRUNCATE_SIDES}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "ToolProtocol":
        """The preset `name`, with any marker (None means the preset's) and length settings replaced."""
        if name not in PRESETS:
            raise ValueError(f"unknown tool format {name!r}; allowed: {sorted(PRESETS)}")
        start, end, template = PRESETS[name]
        markers = {"call_start": start, "call_end": end, "response_template": template}
        markers.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**markers)

    @property
    def response_prefix(self) -> str:
        return self.response_template.split("{output}")[0]

    @property
    def response_suffix(self) -> str:
        return self.response_template.split("{output}")[1]

    def find_call(self, model_text: str) -> str | None:
        """The code of the first closed call in `model_text` (the model's text since its last tool response), or None
        while no call is closed."""
        start = model_text.find(self.call_start)
        if start < 0:
            return None
        end = model_text.find(self.call_end, start + len(self.call_start))
        return None if end < 0 else model_text[start + len(self.call_start) : end]

    def response_body(self, output: str, status: str, *, time_limit_s: float) -> str:
        """What the model is shown of a call's output: trailing whitespace stripped, cut to max_tool_response_length
        characters (TRUNCATION_MARK where the cut is), then a line for a call that did not finish; the response's
        closing marker escaped (_escape_suffix)."""
        body = self._cut(output.rstrip())
        if status == "timeout":
            body += f"\nTimeoutError: the cell ran past its {time_limit_s:g} s limit"
        elif status == "crash":
            body += "\nthe interpreter was killed (memory limit?)"
        elif status == "no_sandbox":
            body = "the Python tool is not available (no sandbox)"
        return self._escape_suffix(body.strip("\n"))

    def _escape_suffix(self, body: str) -> str:
        """The body with every occurrence of the response's closing marker (the suffix without its whitespace, e.g.
        ```` ``` ```` or ``</interpreter>``) broken by a zero-width space after its first character: a program that
        prints the marker cannot end its own response early, so split_turns (SFT's label mask) finds the real end
        and never takes tool output for model text."""
        marker = self.response_suffix.strip()
        return body.replace(marker, marker[0] + "\u200b" + marker[1:]) if len(marker) > 1 else body

    def _cut(self, body: str) -> str:
        limit = self.max_tool_response_length
        if len(body) <= limit:
            return body
        if limit <= len(TRUNCATION_MARK):  # no room for the marker: a plain cut keeps the limit
            return body[len(body) - limit :] if self.tool_response_truncate_side == "left" else body[:limit]
        keep = limit - len(TRUNCATION_MARK)
        if self.tool_response_truncate_side == "left":  # cut the start, keep the end
            return TRUNCATION_MARK.lstrip("\n") + body[len(body) - keep :]
        if self.tool_response_truncate_side == "right":
            return body[:keep] + TRUNCATION_MARK.rstrip("\n")
        head = keep // 2
        return body[:head] + TRUNCATION_MARK + body[len(body) - (keep - head) :]

    def response_text(self, body: str) -> str:
        return self.response_prefix + body + self.response_suffix

    def response_ids(self, tokenizer, body: str) -> list[int]:
        """The tokens appended after a call: the template's text (special tokens allowed: a chat tool turn) around the
        body, whose special-token strings stay plain text. The one tokenisation of a tool response (rollout and SFT)."""
        def encode(text: str, split: bool) -> list[int]:
            return tokenizer(text, add_special_tokens=False, split_special_tokens=split)["input_ids"] if text else []

        return encode(self.response_prefix, False) + encode(body, True) + encode(self.response_suffix, False)

    def split_turns(self, text: str) -> list[tuple[str, bool]]:
        """A finished trajectory's text -> [(segment, written by the model)], tool responses as (text, False):
        after each closed call, a response that starts right there with the template's prefix and runs to its
        suffix. Used to mask tool output out of SFT labels when a dataset row has no recorded turns."""
        turns, position = [], 0
        while True:
            start = text.find(self.call_start, position)
            end = -1 if start < 0 else text.find(self.call_end, start + len(self.call_start))
            if end < 0:
                break
            call_end = end + len(self.call_end)
            if not text.startswith(self.response_prefix, call_end):
                position = call_end
                continue
            body_start = call_end + len(self.response_prefix)
            stop = text.find(self.response_suffix, body_start) if self.response_suffix else len(text)
            stop = len(text) if stop < 0 else stop + len(self.response_suffix)
            turns += [(text[:call_end], True), (text[call_end:stop], False)]
            text, position = text[stop:], 0
        return [turn for turn in turns + [(text, True)] if turn[0]]
