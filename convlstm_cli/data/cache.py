"""A disk cache of decoded frames, so that later epochs skip decoding.

Each entry is one video (or a segment of it) decoded at one setting — size, channels, stride — stored as a uint8 ``.npy``
array ``[T, C, H, W]`` and read back memory-mapped (the OS pages it in; the process never holds the
whole video). The key hashes the file's *content* (its size and up to 16 sampled 1 MiB blocks, so a
renamed copy hits and an edited file misses) together with the decode settings. Entries are written
under a temporary name and moved into place when complete, so concurrent writers (lanes, ranks) and
crashes never leave a partial entry. The cache is not size-bounded: delete the directory to clear it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from convlstm_cli.atomic import Staged

# Bump when the decoded pixels of the same settings would change (scaler, colour conversion).
_FORMAT = "frames-v1-area"
_BLOCK = 1 << 20
_BLOCKS = 16


def content_key(path) -> str:
    """A hex digest of the file's size and sampled content (the whole file when it is small).

    A frame folder is keyed by its files' names, sizes and modification times; a sequence of an
    array (``data.npy#3``) by the array file and its index.
    """
    from convlstm_cli.data.sources import image_files, split_array_name

    path, index = split_array_name(path)
    if path.is_dir():
        stats = [(f.name, f.stat()) for f in image_files(path)]
        listing = [(name, st.st_size, st.st_mtime_ns) for name, st in stats]
        return hashlib.sha256(repr(listing).encode()).hexdigest()
    if index is not None:
        return hashlib.sha256(f"{content_key(path)}#{index}".encode()).hexdigest()
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _BLOCK * _BLOCKS:
            digest.update(f.read())
        else:
            for i in range(_BLOCKS):
                f.seek((size - _BLOCK) * i // (_BLOCKS - 1))
                digest.update(f.read(_BLOCK))
    return digest.hexdigest()


class CacheWriter:
    """Fills one cache entry frame by frame; `commit` publishes it only if every frame arrived.

    Frames are appended with ordinary writes (not through a memory map), so a full disk is an
    `OSError` the caller can catch rather than a SIGBUS.
    """

    def __init__(self, final: Path, shape: tuple[int, ...]):
        self.staged = Staged(final)
        self.expected, self.count = shape[0], 0
        self._frame_bytes = int(np.prod(shape[1:]))
        self._file = open(self.staged.tmp, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, frame: np.ndarray) -> None:
        """Append the next frame (uint8 ``[C, H, W]``); frames beyond the expected count are ignored."""
        if self.count < self.expected:
            data = np.ascontiguousarray(frame, dtype=np.uint8).tobytes()
            if len(data) != self._frame_bytes:
                raise ValueError(f"cache frame has {len(data)} bytes, expected {self._frame_bytes}")
            self._file.write(data)
        self.count += 1

    def commit(self) -> bool:
        """Publish the entry if exactly the expected number of frames was written; else discard it."""
        if self.count != self.expected:
            self.abort()
            return False
        self._file.close()
        self.staged.commit()
        return True

    def abort(self) -> None:
        """Discard the partial entry."""
        self._file.close()
        self.staged.discard()


class FrameCache:
    """Decoded frames on disk, keyed by file content and decode settings.

    Args:
        cache_dir: Directory for the entries (created if missing).
    """

    def __init__(self, cache_dir):
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keys: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def _entry(self, path, size: tuple[int, int], channels: int, stride: int, first: int = 0) -> Path:
        from convlstm_cli.data.sources import split_array_name

        st = os.stat(split_array_name(path)[0])
        stamp = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            key = self._keys.get(stamp)
        if key is None:  # hashing reads up to 16 MiB: once per file and process
            key = content_key(path)
            with self._lock:
                self._keys[stamp] = key
        params = f"{_FORMAT}:{key}:{size[0]}x{size[1]}:c{channels}:s{stride}" + (f":f{first}" if first else "")
        return self.dir / f"{hashlib.sha256(params.encode()).hexdigest()[:40]}.npy"

    def load(self, path, size: tuple[int, int], channels: int, stride: int, first: int = 0) -> np.ndarray | None:
        """The cached frames of ``path`` (from strided frame `first`) as a read-only memory map, or None."""
        entry = self._entry(path, size, channels, stride, first)
        try:
            return np.load(entry, mmap_mode="r")
        except (OSError, ValueError):
            return None

    def writer(self, path, size: tuple[int, int], channels: int, stride: int, frames: int,
               first: int = 0) -> CacheWriter:
        """A writer for the entry of ``path`` (from strided frame `first`), expecting ``frames`` frames."""
        return CacheWriter(self._entry(path, size, channels, stride, first), (frames, channels, *size))


def plan_cache(setting, videos, size: tuple[int, int], channels: int, stride: int, resize: str,
               cache_dir, budget_gb: float) -> tuple[bool, str]:
    """Whether to keep a frame cache for these videos, and a line saying why (`data.cache`).

    ``auto`` keeps one when the decoded frames (at the size they are cached at) fit the budget:
    `budget_gb`, but never more than half the free space where the cache would live.
    """
    import shutil

    from convlstm_cli.data.view import base_size

    need = sum(v.strided_frames(stride) * channels * int(np.prod(base_size((v.height, v.width), size, resize)))
               for v in videos)
    where = Path(cache_dir)
    probe = next((p for p in (where, *where.parents) if p.exists()), Path("."))
    budget = min(budget_gb * 1e9, shutil.disk_usage(probe).free / 2)
    mb = f"{need / 1e6:,.0f} MB"
    if setting is True or setting == "true":
        return True, f"frame cache: on, {mb} at {where}"
    if setting is False or setting == "false":
        return False, "frame cache: off (data.cache false): every epoch decodes"
    if need <= budget:
        return True, f"frame cache: on (data.cache auto: {mb} of a {budget / 1e9:.1f} GB budget) at {where}"
    return False, (f"frame cache: off (data.cache auto: the frames need {mb}, the budget is {budget / 1e9:.1f} GB; "
                   "data.cache=true forces it)")
