"""`.npy` / `.npz` arrays of sequences: layouts, value ranges, probing and reading (memory-mapped).

`open_array` returns a `SequenceArray`: the memory map (an `.npz` member stored without compression is
mapped at its offset inside the zip; a compressed one has to be read whole, and the probe says so),
the layout in use and how it was decided. Sequence k is ``array.sequence(k)``, a view; frames are
converted to uint8 one at a time as the reader asks for them.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convlstm_cli.data import sources
from convlstm_cli.data.sources import resize, split_array_name, to_channels
from convlstm_cli.errors import VideoError

SINGLE = {3: "THW"}  # layouts of one sequence, by dimensions (4-D: TCHW or THWC, by the channel axis)


@dataclass
class SequenceArray:
    """An array of sequences and how to index it."""

    path: Path
    data: np.ndarray  # memory-mapped where possible
    layout: str
    note: str  # how the layout was decided (said by probe and train)

    @property
    def count(self) -> int:
        return 1 if self.layout in ("THW", "TCHW", "THWC") else self.data.shape[self.layout.index("N")]

    def sequence(self, k: int) -> np.ndarray:
        """Sequence k as [T, C, H, W] (a view)."""
        a, lay = self.data, self.layout
        if lay == "TNHW":
            return a[:, k, None]
        if lay == "NTHW":
            return a[k, :, None]
        if lay == "NTCHW":
            return a[k]
        if lay == "NTHWC":
            return a[k].transpose(0, 3, 1, 2)
        if lay == "THW":
            return a[:, None]
        return a if lay == "TCHW" else a.transpose(0, 3, 1, 2)


def _load(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith(".npy")]
        if len(names) != 1:
            raise VideoError(path, f"an .npz with {len(names)} arrays: keep one array of frames per file")
        info = z.getinfo(names[0])
    if info.compress_type == zipfile.ZIP_STORED:  # map the member in place: never read whole
        with open(path, "rb") as f:
            f.seek(info.header_offset + 26)
            skip = int.from_bytes(f.read(2), "little") + int.from_bytes(f.read(2), "little")
            f.seek(info.header_offset + 30 + skip)
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = np.lib.format._read_array_header(f, version)
            offset = f.tell()
        return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")
    with np.load(path, allow_pickle=False) as z:  # compressed: no way to map it
        return z[names[0].removesuffix(".npy")]


def _layout(a: np.ndarray, declared: str) -> tuple[str, str]:
    """(layout, how it was decided) for array `a`."""
    nd = a.ndim
    if declared != "auto":
        if len(declared) != nd:
            raise ValueError(f"data.layout {declared} has {len(declared)} axes, the array has {nd}: {list(a.shape)}")
        c = declared.find("C")
        if c >= 0 and a.shape[c] not in (1, 3, 4):
            raise ValueError(f"data.layout {declared}: axis C has {a.shape[c]} entries, expected 1, 3 or 4")
        return declared, f"layout {declared} (data.layout)"
    if nd == 3:
        return "THW", "layout THW detected (one sequence)"
    if nd == 4 and a.shape[1] in (1, 3, 4):
        return "TCHW", "layout TCHW detected (one sequence)"
    if nd == 4 and a.shape[-1] in (3, 4) and a.shape[1] > 4:
        return "THWC", "layout THWC detected (one sequence)"
    if nd == 4 and a.dtype == np.uint8 and a.shape[0] == 20 and a.shape[2:] == (64, 64) and a.shape[1] > 20:
        return "TNHW", "layout TNHW detected: Moving MNIST's (20 frames first, then the sequences)"
    if nd == 4:
        return "NTHW", "layout NTHW assumed (sequences, then frames); set data.layout=TNHW if time comes first"
    if nd == 5 and a.shape[2] in (1, 3, 4):
        return "NTCHW", "layout NTCHW detected (OpenSTL's)"
    if nd == 5 and a.shape[-1] in (1, 3, 4):
        return "NTHWC", "layout NTHWC detected"
    raise ValueError(f"no layout fits shape {list(a.shape)}: set data.layout to one of {', '.join(sources.LAYOUTS[1:])}")


def open_array(path, options: sources.ArrayOptions | None = None) -> SequenceArray:
    """Open an array file (not a sequence of it: ``data.npy``, not ``data.npy#3``).

    Raises:
        VideoError: unreadable, a dtype that is not numeric, floats without data.range, or no layout.
    """
    options = options or sources.OPTIONS
    path = Path(path)
    try:
        data = _load(path)
    except VideoError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise VideoError(path, f"not a readable array ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if data.dtype.kind not in "uif":
        raise VideoError(path, f"dtype {data.dtype} is not numeric: arrays hold uint8 levels or numbers with data.range")
    if data.dtype != np.uint8 and options.range is None:
        raise VideoError(path, f"dtype {data.dtype}: set data.range to the values that map to black and white "
                         "(e.g. --set data.range=[0,70])")
    try:
        layout, note = _layout(data, options.layout)
    except ValueError as e:
        raise VideoError(path, str(e)) from None
    return SequenceArray(path, data, layout, note)


def first_nonfinite(seq: np.ndarray) -> int | None:
    """The first frame of a sequence [T, …] holding NaN or infinity (None: all finite, or not floats)."""
    if seq.dtype.kind != "f":
        return None
    bad = ~np.isfinite(seq).reshape(len(seq), -1).all(axis=1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def to_levels(frame: np.ndarray, value_range) -> np.ndarray:
    """One frame in the array's units → uint8 levels (uint8 stays as is; numbers by data.range)."""
    if frame.dtype == np.uint8 and value_range is None:
        return np.asarray(frame)
    lo, hi = value_range if value_range is not None else (0.0, 255.0)
    scaled = (np.asarray(frame, dtype=np.float32) - lo) / (hi - lo)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def from_unit(pred: np.ndarray, dtype: np.dtype, value_range) -> np.ndarray:
    """Predictions in [0, 1] → the array's units (for prediction.npy)."""
    if value_range is None:
        return np.rint(np.clip(pred, 0, 1) * 255).astype(np.uint8)
    lo, hi = value_range
    return (lo + np.asarray(pred, np.float64) * (hi - lo)).astype(dtype if np.dtype(dtype).kind == "f" else np.float32)


def iter_array(name, size=None, channels: int = 1, stride: int = 1, start: int = 0,
               on_error: Callable[[str], None] | None = None, resize_mode: str = "stretch",
               base: bool = False) -> Iterator[np.ndarray]:
    """Read sequence ``data.npy#k`` like `data.video.iter_frames` reads a video."""
    file, k = split_array_name(name)
    array = open_array(file)
    seq = array.sequence(k or 0)
    for t in range(start * stride, len(seq), stride):
        yield resize(to_channels(to_levels(seq[t], sources.OPTIONS.range), channels), size, resize_mode, base)
