"""Does a model copy the operands into its tool call, and the tool's output into its answer? (issue 25)

    python benchmarks/tool_copy_probe.py runs/tool_multiply/final_model [more model dirs ...]

Scores the teacher's correct tool traces (data/tool_traces.py, tool_slip 0) of 40 fresh 3-digit products, rendered as
configs/tool_multiply.yaml renders them, and prints the model's mean negative log-likelihood (nats per token) on the
operand digits it writes into `print(A * B)` and on the answer digits it copies from the ```output block. Chance is
ln 10 = 2.30; a model that copies is near 0. This is how the SFT recipe of configs/tool_multiply.yaml was chosen
(data/tool_traces.py's docstring, benchmarks/results_tool_learning.md): a tiny model that never learns to copy the
operands calls the tool with the wrong numbers, and GRPO has nothing to reward.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEM_PROMPT = "Multiply the numbers. You can run Python."  # configs/tool_multiply.yaml's data.system_prompt


def copy_losses(model_dir: Path, *, num_traces: int = 40, seed: int = 7) -> tuple[float, float]:
    """(mean NLL on the call's operand digits, mean NLL on the answer's digits) of the model in `model_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data.sft_examples import tokenize_example
    from data.tool_protocol import ToolProtocol
    from data.tool_traces import tool_arithmetic_trace

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    protocol, rng = ToolProtocol.preset("markdown"), random.Random(seed)
    operand, answer = [], []
    for _ in range(num_traces):
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        question = f"What is {a} * {b}?"
        trace = tool_arithmetic_trace(question, str(a * b), protocol=protocol, rng=rng, tool_slip=0.0)
        example = tokenize_example(question, trace, tokenizer, template="r1_zero", system_prompt=SYSTEM_PROMPT,
                                   prefill_think=True, tool_protocol=protocol)
        ids = torch.tensor([example.input_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        text = [tokenizer.decode([t]) for t in example.input_ids]
        nll = lambda j: -logprobs[j - 1, example.input_ids[j]].item()  # noqa: E731  (token j predicted at j - 1)
        call = max(i for i, t in enumerate(text) if t == "(")  # print( ... the operands follow
        operand += [nll(j) for j in range(call + 1, call + 8) if text[j].isdigit()]
        opened = max(i for i, t in enumerate(text) if t == "<answer>")
        answer += [nll(j) for j in range(opened + 1, len(text)) if text[j].isdigit()]
    return statistics.mean(operand), statistics.mean(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported model directories (a run's final_model/)")
    args = parser.parse_args()
    print("| model | operand digits (nats) | answer digits (nats) |\n|---|---|---|")
    for model_dir in args.models:
        operand, answer = copy_losses(model_dir)
        print(f"| {model_dir} | {operand:.2f} | {answer:.2f} |")


if __name__ == "__main__":
    main()
