"""Prompt data: load any source into ``prompt``/``answer`` rows, render templates, generate synthetic tasks, sample.

``data.sources``   load_prompt_dataset, DATA_FORMATS
``data.prompts``   prepare_prompt, prepare_prompts, encode_prompt (the one render + tokenise + length policy)
``data.sft_examples`` SFT examples, packing, collation, block-causal mask
``data.templates`` render_prompt, TEMPLATES, R1_ZERO_INSTRUCTION
``data.synthetic`` make_countdown, make_arithmetic, make_gsm8k_style, make_synthetic, SYNTHETIC_KINDS,
                   exclude_questions, write_dataset, read_rows   (CLI: ``python -m data.synthetic --help``)
``data.sampler``   PromptSampler

The names are re-exported lazily (PEP 562 ``__getattr__``): an eager ``from data.synthetic import ...`` here would make
``python -m data.synthetic`` warn that the module was imported before it ran, and would pull in torch and datasets
for a CLI that needs neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ below imports on first use
    from data.sampler import PromptSampler
    from data.prompts import encode_prompt, prepare_prompt, prepare_prompts
    from data.sources import DATA_FORMATS, load_prompt_dataset
    from data.synthetic import (
        SYNTHETIC_KINDS,
        exclude_questions,
        make_arithmetic,
        make_countdown,
        make_gsm8k_style,
        make_synthetic,
        read_rows,
        write_dataset,
    )
    from data.templates import R1_ZERO_INSTRUCTION, TEMPLATES, render_prompt

_EXPORTS = {
    "load_prompt_dataset": "data.sources",
    "prepare_prompt": "data.prompts",
    "prepare_prompts": "data.prompts",
    "encode_prompt": "data.prompts",
    "DATA_FORMATS": "data.sources",
    "render_prompt": "data.templates",
    "TEMPLATES": "data.templates",
    "R1_ZERO_INSTRUCTION": "data.templates",
    "make_countdown": "data.synthetic",
    "make_arithmetic": "data.synthetic",
    "make_gsm8k_style": "data.synthetic",
    "make_synthetic": "data.synthetic",
    "SYNTHETIC_KINDS": "data.synthetic",
    "exclude_questions": "data.synthetic",
    "write_dataset": "data.synthetic",
    "read_rows": "data.synthetic",
    "PromptSampler": "data.sampler",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
