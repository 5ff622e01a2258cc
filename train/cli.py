"""The `thinkrl` command: `thinkrl train|sample|eval|preflight|convert|report [options]`.

Each command is a module with its own parser and `main(argv)`, which `python -m train.<module>` runs too (train.main,
train.sample, train.evaluate, train.preflight, train.convert, train.report); `python -m train` is this dispatcher.
Without a command, `thinkrl --config X.yaml [key.sub=value ...]` means `thinkrl train ...`: the launchers run
`-m train --config ...` (torchrun, accelerate, SLURM) and the deepspeed launcher puts `--local_rank=N` first.
A command's module is imported only when it runs, so `thinkrl --help` answers at once.
"""

from __future__ import annotations

import importlib
import os
import sys

from train.cli_args import print_error

COMMANDS = {  # name -> (module, what it does in one line)
    "train": ("train.main", "GRPO training from a YAML config (with its optional SFT stage first)"),
    "sample": ("train.sample", "rejection sampling: k scored completions per prompt, the kept ones to JSONL"),
    "eval": ("train.evaluate", "greedy pass@1 and sampled pass@k / mean@k of a model on the config's eval set"),
    "preflight": ("train.preflight", "check that the config's rewards can score its data, with the full report"),
    "convert": ("train.convert", "write a GGUF file or a training checkpoint as an HF model directory"),
    "report": ("train.report", "plot a run's metrics.jsonl into RUN_DIR/report/"),
}
DEFAULT_COMMAND = "train"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: thinkrl <command> [options]    (`thinkrl <command> --help` lists a command's options)", "",
             "GRPO reasoning trainer on DeepSpeed.", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", f"Without a command, `thinkrl --config X.yaml [key.sub=value ...]` runs `thinkrl {DEFAULT_COMMAND}`.",
              "Bad input exits 2 with one line on stderr: `thinkrl <command>: error: ...`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `thinkrl` script and `python -m train`: run the named command's main on the rest."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv:
        return print_error("", f"name a command: {', '.join(COMMANDS)} (`thinkrl --help` says what each does)")
    if argv[0].startswith("-"):  # `thinkrl --config X.yaml ...`, `--local_rank=0 --config ...`
        command, rest = DEFAULT_COMMAND, argv
    else:
        command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return print_error("", f"unknown command {command!r}; the commands: {', '.join(COMMANDS)} "
                           "(`thinkrl --help` says what each does)")
    module, _ = COMMANDS[command]
    code = importlib.import_module(module).main(rest)
    world_size = os.environ.get("WORLD_SIZE", "1")
    if world_size.isdigit() and int(world_size) > 1:  # one rank of several (why: the docstring of the call)
        from train.distributed import exit_without_interpreter_shutdown

        exit_without_interpreter_shutdown(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
