"""Atomic file writes: write under a hidden temporary name beside the target, then `os.replace`.

The temporary file lives in the same directory (same filesystem), so the rename is atomic: a reader
sees the old file or the new one, never half of one, and a crash mid-write keeps the old file.
"""

from __future__ import annotations

import os
from pathlib import Path


def temp_path(path: Path) -> Path:
    """A hidden temporary name next to `path`, unique to this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text(path: str | Path, text: str) -> Path:
    """Replace `path` with `text` atomically (the parent directory is created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
