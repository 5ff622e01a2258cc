"""Writing a file so that a crash never leaves half of it: the one atomic write of the run directory, checkpoints and
`thinkrl sample`'s outputs."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: written to a sibling temporary file, flushed to disk, then renamed over
    `path` (os.replace is atomic on POSIX). A kill mid-write leaves the old file, never half of the new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
