"""Sequences that are not video files: folders of image frames, and `.npy` / `.npz` arrays.

Much of this field's data is not mp4: radar and satellite loops come as image sequences or arrays,
benchmarks as `.npy` (Moving MNIST's ``mnist_test_seq.npy`` is [20, 10000, 64, 64] uint8, time
first), OpenSTL's loaders use [N, T, C, H, W], scientific data is float in physical units.

- **A frame folder** is one sequence: its PNG / JPEG / TIFF / BMP files in natural order
  (``frame2.png`` before ``frame10.png``). A folder of such folders is many sequences.
- **An array** holds many sequences; sequence k of ``data.npy`` is named ``data.npy#k`` everywhere
  (probe, predict, the streamer's state). Its layout is declared (`data.layout`) or detected:
  TNHW (Moving MNIST), NTHW, NTCHW, NTHWC, and THW / TCHW / THWC for a single sequence. Arrays are
  memory-mapped (`.npz` members are read lazily, one sequence at a time), never loaded whole.
- **Values**: uint8 arrays are pixel levels; float arrays take `data.range` [lo, hi]: values are
  clipped to it and scaled to [0, 1] (then to the pipeline's 8-bit levels: 256 steps of the range).
  Predictions on an array are written back in its own units (`prediction.npy`).

Both yield uint8 frames [C, H, W] through the same resize rule as videos (`data.view`); the scaling
itself is an antialiased bilinear resize (torch) rather than FFmpeg's area filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ARRAY_EXTENSIONS = (".npy", ".npz")
LAYOUTS = ("auto", "TNHW", "NTHW", "NTCHW", "NTHWC", "THW", "TCHW", "THWC")


@dataclass(frozen=True)
class ArrayOptions:
    """How arrays are read: their layout and, for floats, the range of values that maps to [0, 1]."""

    layout: str = "auto"
    range: tuple[float, float] | None = None


OPTIONS = ArrayOptions()  # set once from the run config (`configure`); the streamer's threads read it


def configure(layout: str = "auto", value_range=None) -> None:
    """Set how arrays are read for this process (from `data.layout` and `data.range`)."""
    global OPTIONS
    OPTIONS = ArrayOptions(layout, tuple(float(v) for v in value_range) if value_range else None)


def natural_key(name: str):
    """'frame10' after 'frame2': digits compare as numbers."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def split_array_name(path) -> tuple[Path, int | None]:
    """``data.npy#3`` → (data.npy, 3); a plain path → (path, None)."""
    text = str(path)
    base, sep, index = text.rpartition("#")
    if sep and index.isdigit() and base.lower().endswith(ARRAY_EXTENSIONS):
        return Path(base), int(index)
    return Path(text), None


def kind_of(path) -> str:
    """"array", "frames" (a folder of images) or "video"."""
    file, _ = split_array_name(path)
    if file.suffix.lower() in ARRAY_EXTENSIONS:
        return "array"
    if file.is_dir() and image_files(file):
        return "frames"
    return "video"


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, in natural order (hidden files left out)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    files = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


# -- resizing (shared by frames and arrays) ------------------------------------------------------------


def resize(frame: np.ndarray, size: tuple[int, int] | None, resize_mode: str, base: bool) -> np.ndarray:
    """uint8 [C, h, w] → [C, H, W] by the resize rule (`data.view`); antialiased bilinear scaling."""
    from convlstm_cli.data.view import base_size, fit

    if size is None:
        return frame
    scaled = base_size(frame.shape[-2:], size, resize_mode)
    if tuple(frame.shape[-2:]) != tuple(scaled):
        t = torch.from_numpy(np.array(frame))[None].float()  # a copy: memory-mapped frames are read-only
        t = F.interpolate(t, size=scaled, mode="bilinear", antialias=True, align_corners=False)
        frame = t[0].round_().clamp_(0, 255).to(torch.uint8).numpy()
    return frame if base or tuple(scaled) == tuple(size) else fit(frame, size)


def to_channels(frame: np.ndarray, channels: int) -> np.ndarray:
    """[C, H, W] with C 1, 3 or 4 → `channels` (gray by the ITU-R BT.601 weights, as FFmpeg does)."""
    c = frame.shape[0]
    if c == 4:
        frame, c = frame[:3], 3
    if c == channels:
        return frame
    if channels == 3:
        return np.repeat(frame, 3, axis=0)
    gray = 0.299 * frame[0].astype(np.float32) + 0.587 * frame[1] + 0.114 * frame[2]
    return np.rint(gray)[None].astype(np.uint8)
