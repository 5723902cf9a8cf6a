"""Atomic file writes: every output is written under a hidden temporary name beside its target and
moved into place with `os.replace` only when it is complete.

The temporary file lives in the same directory (same filesystem), so the rename is atomic: a reader
sees the old file or the new one, never half of one, and a crash mid-write keeps the old file. The
temporary name keeps the target's extension (FFmpeg and numpy pick formats by it) and is unique per
process and call, so concurrent writers (threads, lanes, ranks, two runs) never share one.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

_serial = itertools.count()  # itertools.count is atomic under the GIL: unique names across threads


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Staged:
    """One file in the making: write to `tmp`, then `commit()` it to `path` (or `discard()` it).

    As a context manager it commits on a normal exit and discards on an exception.

    Args:
        path: The final name. Its parent directory is created if missing.
        durable: fsync the file before the rename and the directory after it (checkpoints), so a
            power loss cannot leave an empty file under the final name.
    """

    def __init__(self, path: str | Path, durable: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}-{next(_serial)}.tmp{self.path.suffix}")
        self.durable = durable
        self.done = False

    def commit(self) -> Path:
        """Move the finished temporary file to its final name."""
        if self.durable:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        self.done = True
        if self.durable:
            _fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Delete the temporary file (the final name keeps whatever it held)."""
        self.tmp.unlink(missing_ok=True)
        self.done = True

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.done:
            self.commit()
        elif not self.done:
            self.discard()


def write_bytes(path: str | Path, data: bytes, durable: bool = False) -> Path:
    """Replace `path` with `data` atomically."""
    with Staged(path, durable) as s:
        s.tmp.write_bytes(data)
    return s.path


def write_text(path: str | Path, text: str, durable: bool = False) -> Path:
    """Replace `path` with `text` atomically."""
    return write_bytes(path, text.encode(), durable)
