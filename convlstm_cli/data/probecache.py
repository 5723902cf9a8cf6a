"""Remembered probe results, so that a large folder is not counted again on every run.

Counting a video's frames means reading every packet of the file, and decoding all of it where the
container's header has no frame count (mkv, webm, ts): for a big folder, minutes on every `train`,
`train --resume` and `probe`. A result (usable with its `VideoInfo`, or unusable with its reason) is
stored under the file's absolute path, size and modification time, so an edited, replaced or touched
file is probed again.

One JSON file, `probe-v1.json`, in ``$CONVLSTM_CACHE_DIR``, else ``$XDG_CACHE_HOME/convlstm-cli``,
else ``~/.cache/convlstm-cli``; ``CONVLSTM_CACHE_DIR=off`` turns it off. A cache that cannot be read
or written is ignored: it can only save time, never fail a run.

Several runs may probe at once (two trainings on one folder, DDP ranks). `save` is a read-modify-write
under an exclusive POSIX `flock` on the cache's directory (its inode stays put while the file is
replaced): it re-reads the file, adds this process's new entries and replaces the file atomically,
so no writer's entries are lost and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from convlstm_cli import atomic

_NAME = "probe-v1.json"  # bump the version when probing would give a different answer for a file
_MAX_ENTRIES = 50_000  # the oldest entries go first beyond this


def cache_file() -> Path | None:
    """Where the cache lives, or None when it is turned off."""
    env = os.environ.get("CONVLSTM_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env) / _NAME
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convlstm-cli" / _NAME


def _key(path) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


@contextlib.contextmanager
def _locked(file: Path) -> Iterator[None]:
    """An exclusive lock on ``file``'s directory (a no-op where flock does not exist)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: writes stay atomic, concurrent entries may be lost
        yield
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        yield
    finally:
        os.close(fd)


def _read(file: Path) -> dict:
    try:
        loaded = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


class ProbeCache:
    """Probe outcomes by file identity; `get` and `put` by path, `save` writes the file once."""

    def __init__(self, file: Path | None = None) -> None:
        self.file = file if file is not None else cache_file()
        self.entries: dict[str, dict] = _read(self.file) if self.file is not None else {}
        self.added: dict[str, dict] = {}  # this process's new entries, merged into the file by save()

    def get(self, path) -> dict | None:
        """{"info": VideoInfo fields} or {"error": reason} for an unchanged file seen before, else None."""
        key = _key(path)
        entry = self.entries.get(key) if key else None
        if not isinstance(entry, dict) or not ({"info", "error"} & entry.keys()):
            return None
        return entry

    def put(self, path, info=None, error: str | None = None) -> None:
        """Remember a `VideoInfo` (info) or an unusable file's reason (error)."""
        key = _key(path)
        if self.file is None or key is None:
            return
        entry = {"info": asdict(info)} if info is not None else {"error": error}
        self.entries[key] = self.added[key] = entry

    def save(self) -> None:
        """Merge this process's new entries into the file (under the lock; see the module docstring)."""
        if self.file is None or not self.added:
            return
        try:
            with _locked(self.file):
                merged = _read(self.file)
                for key, entry in self.added.items():
                    merged.pop(key, None)  # re-inserted last: the newest entries survive trimming
                    merged[key] = entry
                keep = dict(list(merged.items())[-_MAX_ENTRIES:])
                atomic.write_text(self.file, json.dumps(keep))
        except OSError:
            return  # a read-only home or a full disk: probing still worked
        self.entries, self.added = keep, {}
