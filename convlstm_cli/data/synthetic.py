"""Built-in sample data: short mp4 videos of shapes bouncing in a box, and frame-index test videos.

`make_dataset` is what ``convlstm make-data`` runs: a seeded numpy generator draws a few circles and
squares of varied size, speed and brightness that move in straight lines, bounce off the walls and
pass in front of each other (the later shape occludes the earlier). Video i depends only on
``(seed, i)`` and the size settings, so the same command gives the same pixels anywhere; nothing is
downloaded. Edges are anti-aliased so sub-pixel motion is visible, and the files are encoded at high
quality (crf 10) so the motion stays learnable after compression.

`index_frames` / `decode_index` write and read a frame's own index as big black/white blocks, which
survive H.264 and resizing; the streamer and predict tests use them to check frame alignment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convlstm_cli.data.video import LOSSLESS, write_video
from convlstm_cli.errors import InputError


def _shape_params(rng: np.random.Generator, size: int, channels: int) -> list[dict]:
    objects = []
    for _ in range(int(rng.integers(2, 5))):
        radius = rng.uniform(0.06, 0.16) * size
        speed = rng.uniform(0.5, 2.5) * size / 64
        angle = rng.uniform(0, 2 * np.pi)
        objects.append(
            {
                "square": bool(rng.random() < 0.5),
                "radius": radius,
                "pos": rng.uniform(radius, size - radius, 2),
                "vel": speed * np.array([np.sin(angle), np.cos(angle)]),
                "colour": rng.uniform(0.35, 1.0, channels),
            }
        )
    return objects


def shapes_frames(rng: np.random.Generator, frames: int, size: int, channels: int = 1) -> np.ndarray:
    """Render one clip of bouncing shapes.

    Args:
        rng: The generator that decides everything about the clip.
        frames: Number of frames.
        size: Frame height and width.
        channels: 1 gray or 3 colour.

    Returns:
        uint8 ``[frames, size, size, channels]``.
    """
    objects = _shape_params(rng, size, channels)
    background = rng.uniform(0.0, 0.12, channels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    out = np.empty((frames, size, size, channels), np.uint8)
    for t in range(frames):
        image = np.broadcast_to(background, (size, size, channels)).copy()
        for obj in objects:
            dy, dx = yy - obj["pos"][0], xx - obj["pos"][1]
            dist = np.maximum(np.abs(dy), np.abs(dx)) if obj["square"] else np.hypot(dy, dx)
            # Coverage of a one-pixel soft edge: sub-pixel motion changes the pixels smoothly.
            alpha = np.clip(obj["radius"] - dist + 0.5, 0.0, 1.0)[..., None]
            image = image * (1 - alpha) + obj["colour"] * alpha
            _bounce(obj, size)
        out[t] = np.rint(image * 255)
    return out


def _bounce(obj: dict, size: int) -> None:
    obj["pos"] = obj["pos"] + obj["vel"]
    low, high = obj["radius"], size - obj["radius"]
    for axis in range(2):
        # Mirror the overshoot back inside so the shape touches the wall and leaves at the same speed.
        if obj["pos"][axis] < low:
            obj["pos"][axis], obj["vel"][axis] = 2 * low - obj["pos"][axis], -obj["vel"][axis]
        elif obj["pos"][axis] > high:
            obj["pos"][axis], obj["vel"][axis] = 2 * high - obj["pos"][axis], -obj["vel"][axis]


def make_dataset(
    out_dir,
    num: int = 8,
    frames: int = 64,
    size: int = 64,
    seed: int = 0,
    channels: int = 1,
    fps: float = 10.0,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``num`` bouncing-shapes videos ``shapes_0000.mp4``, ... into ``out_dir``.

    Args:
        out_dir: Directory (created if missing); other files in it are left alone.
        num: Number of videos.
        frames: Frames per video.
        size: Frame height and width in pixels.
        seed: Base seed; video i uses ``(seed, i)``.
        channels: 1 gray or 3 colour.
        fps: Frame rate written into the files.
        overwrite: Replace existing ``shapes_*.mp4`` files of the same names instead of refusing.

    Returns:
        The files written, in order.

    Raises:
        InputError: Bad sizes, or a target file exists and ``overwrite`` is False.
    """
    if num < 1 or frames < 1 or size < 8 or channels not in (1, 3):
        raise InputError(f"make-data: need num >= 1, frames >= 1, size >= 8, channels 1 or 3 "
                         f"(got num={num}, frames={frames}, size={size}, channels={channels})")
    out_dir = Path(out_dir)
    paths = [out_dir / f"shapes_{i:04d}.mp4" for i in range(num)]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} already exists ({len(existing)} of the {num} files); "
                         "use --force to overwrite them or choose another directory")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        rng = np.random.default_rng([seed, i])
        write_video(path, shapes_frames(rng, frames, size, channels), fps=fps, crf=LOSSLESS)
    return paths


def index_frames(count: int, size: tuple[int, int] = (64, 64), channels: int = 1, first: int = 0) -> np.ndarray:
    """Frames that show their own index as a 4x4 grid of black/white blocks (16 bits, LSB first).

    Args:
        count: Number of frames.
        size: ``(H, W)``; at least 16x16 so each block is 4+ pixels wide.
        channels: 1 or 3 (the same value in every channel).
        first: Index of the first frame.

    Returns:
        uint8 ``[count, H, W, channels]``.
    """
    h, w = size
    if h < 16 or w < 16:
        raise ValueError(f"index frames need at least 16x16 pixels, got {size}")
    index = np.arange(first, first + count)
    bits = (index[:, None] >> np.arange(16)) & 1                      # [T, 16]
    grid = bits.reshape(count, 4, 4).astype(np.uint8) * 255
    rows = np.minimum(np.arange(h) * 4 // h, 3)
    cols = np.minimum(np.arange(w) * 4 // w, 3)
    image = grid[:, rows][:, :, cols]                                  # [T, H, W]
    return np.repeat(image[..., None], channels, axis=-1)


def decode_index(frames: np.ndarray) -> np.ndarray:
    """Read the indices written by `index_frames` back from decoded frames.

    Args:
        frames: uint8 ``[..., C, H, W]`` (any size the video was resized to, 8x8 or more).

    Returns:
        int64 array of the leading shape.
    """
    frames = np.asarray(frames, np.float32)
    h, w = frames.shape[-2:]
    bits = np.empty(frames.shape[:-3] + (16,), np.int64)
    for k in range(16):
        r, c = divmod(k, 4)
        # The middle half of each block: far from its edges, where compression and resizing blur.
        block = frames[..., (4 * r + 1) * h // 16 : (4 * r + 3) * h // 16, (4 * c + 1) * w // 16 : (4 * c + 3) * w // 16]
        bits[..., k] = block.mean(axis=(-3, -2, -1)) > 127.5
    return (bits << np.arange(16)).sum(axis=-1)


def write_index_video(path, count: int, size: tuple[int, int] = (64, 64), channels: int = 1, fps: float = 10.0) -> Path:
    """Write an H.264 video whose frame i shows the number i (see `index_frames`).

    Returns:
        The path written.
    """
    return write_video(path, index_frames(count, size, channels), fps=fps, crf=0)
