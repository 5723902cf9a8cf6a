"""A folder of image frames as one sequence: probe it, and read it frame by frame (Pillow).

The frames are the folder's PNG / JPEG / TIFF / BMP files in natural order. A probe checks what a
decoder would trip over later: every frame the same size, and no frame missing from a numbered
sequence (``f001.png``, ``f002.png``, ``f004.png``: frame 3 is missing). 16-bit images keep their top
8 bits; an alpha channel is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from convlstm_cli.data.sources import image_files, resize, to_channels
from convlstm_cli.errors import VideoError


def _number(path: Path) -> int | None:
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else None


def _missing(files: list[Path]) -> str | None:
    """A gap in the frames' numbering, if they are numbered."""
    numbers = [_number(f) for f in files]
    if len(files) < 3 or any(n is None for n in numbers):
        return None
    steps = np.diff(numbers)
    step = int(np.median(steps))
    if step <= 0:
        return None
    for f, n, s in zip(files, numbers, steps):
        if s > step:
            return f"frame {n + step} is missing (after {f.name})"
    return None


def probe_frames(folder) -> tuple[int, int, int, str]:
    """(frames, height, width, format) of a frame folder.

    Raises:
        VideoError: no images, an unreadable image, mixed frame sizes or a missing frame.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    files = image_files(folder)
    if not files:
        raise VideoError(folder, "no image frames in this folder")
    sizes, fmt = {}, ""
    for f in files:
        try:
            with Image.open(f) as im:  # reads the header only
                sizes.setdefault(im.size, f)
                fmt = fmt or (im.format or "").lower()
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise VideoError(folder, f"frame {f.name} cannot be read ({type(e).__name__})") from None
        if len(sizes) > 1:
            (a, fa), (b, fb) = list(sizes.items())[:2]
            raise VideoError(folder, f"mixed frame sizes: {fa.name} is {a[0]}x{a[1]}, {fb.name} is {b[0]}x{b[1]}")
    gap = _missing(files)
    if gap:
        raise VideoError(folder, gap)
    (w, h), = sizes
    return len(files), h, w, fmt


def _to_uint8(image) -> np.ndarray:
    """A Pillow image → uint8 [C, H, W] (C 1 or 3; 16-bit keeps its top 8 bits)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image).astype(np.uint32)
        return (arr >> 8 if arr.max() > 255 else arr).astype(np.uint8)[None]
    if image.mode == "F":
        return np.rint(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8)[None]
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    arr = np.asarray(image)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def iter_frame_folder(folder, size=None, channels: int = 1, stride: int = 1, start: int = 0,
                      on_error: Callable[[str], None] | None = None, resize_mode: str = "stretch",
                      base: bool = False) -> Iterator[np.ndarray]:
    """Read a frame folder like `data.video.iter_frames` reads a video (same arguments and frames)."""
    from PIL import Image

    files = image_files(Path(folder))[start * stride :: stride]
    for f in files:
        try:
            with Image.open(f) as im:
                frame = _to_uint8(im)
        except (OSError, ValueError) as e:
            if on_error:
                on_error(f"{folder}: frame {f.name} cannot be read ({type(e).__name__})")
            return
        yield resize(to_channels(frame, channels), size, resize_mode, base)
