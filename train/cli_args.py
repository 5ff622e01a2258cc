"""What every `thinkrl` command shares at its edge: its name on every line, the one error-line format, and the parser
of `--config X.yaml` with `key.sub=value` overrides.

Lines a command writes about its outcome begin `thinkrl <command>:` (`thinkrl train: done; ...`, `thinkrl eval: wrote
...`), whichever way it was started (`thinkrl eval`, `python -m train.evaluate`). Bad input is exactly one line on
stderr, `thinkrl <command>: error: <what, naming the file, key or flag at fault>`, and exit status 2, before anything
heavy runs; argparse's own complaints (a missing flag, a bad choice) take the same one-line form instead of usage plus
message. Progress lines of the stages a command runs (set-up, preflight, the SFT stage, step evaluations) begin
`thinkrl:`: the same stage code serves several commands.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

BAD_INPUT = 2


def program(command: str) -> str:
    """How the lines of `command` begin: `thinkrl train`, `thinkrl eval` (`thinkrl` itself for "")."""
    return f"thinkrl {command}" if command else "thinkrl"


def one_line(message: str) -> str:
    """`message` on one line: several config errors at once are joined with '; ', so the user still sees one line."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def print_error(command: str, message: str, *, status: int = BAD_INPUT) -> int:
    """Write `thinkrl <command>: error: <message on one line>` to stderr; returns `status` for main() to return."""
    print(f"{program(command)}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return status


class CommandParser(argparse.ArgumentParser):
    """argparse for one `thinkrl` command: `prog` is `thinkrl <command>`, and a usage mistake is the one error line."""

    def __init__(self, command: str, **kwargs) -> None:
        super().__init__(prog=program(command), **kwargs)
        self.command = command

    def error(self, message: str) -> NoReturn:
        print_error(self.command, f"{message} (`{self.prog} --help` lists the options)")
        sys.exit(BAD_INPUT)


def add_config_arguments(parser: argparse.ArgumentParser, *, accepts_local_rank: bool = False,
                         config_help: str = "YAML experiment file, e.g. configs/quickstart.yaml") -> None:
    """`--config X.yaml` and trailing `key.sub=value` overrides of it (parse with `parse_intermixed_args`, so the
    overrides may sit before or after the flags). `accepts_local_rank`: the command runs under the deepspeed launcher,
    which appends `--local_rank=N`; it is accepted and hidden (the rank comes from the environment)."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="override a config value, e.g. rollout.temperature=0.8 (YAML syntax for the value)")
    if accepts_local_rank:
        parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
