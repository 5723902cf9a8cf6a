"""Built-in memory data of a second kind: a still scene that an occluding bar sweeps across, so what
it uncovers was last seen longer ago than a training chunk.

Each video: a random textured background that never moves (a wall, a parked car, the far bank of a
river) and a grey bar in front of it that slides sideways at constant speed and bounces off the
frame's sides. A column stays behind the bar for 0.4–1.2 × ``hidden`` frames (the bar's width over
its speed, drawn per video; the bar is at most 0.6 of the frame wide), so some spans fit inside a
training chunk and some do not. Where the bar uncovers a column it hid for longer than the window, a
model that predicts from the last few frames can only guess what comes out from behind it; one that
carries a state can have kept it.

This is the memory a surveillance or traffic camera needs (a pedestrian walks past a poster; a lorry
passes in front of a shop), and unlike `occlusion` nothing hidden moves: a ConvLSTM's cell state,
updated pointwise, can hold it where it is (its forget gate at one) instead of carrying it across
the grid.

Ground truth beside every ``reveal_0000.mp4``: ``reveal_0000.json`` with, per frame,

- ``visible``: for each column, the share of it not behind the bar (0 covered … 1 in view);
- ``memory``: the frame needs memory: some column shows in it that was fully covered in every one of
  the ``window`` frames before it and had shown before that (a window cannot have seen it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from convlstm_cli.data.video import LOSSLESS, refuse_existing, write_video
from convlstm_cli.errors import InputError

BAR = 0.35  # the occluder's grey
SPEED = (1.5, 2.5)  # pixels per frame the bar slides
SPAN = (0.4, 1.2)  # frames a column stays covered, as multiples of ``hidden``


def texture(rng: np.random.Generator, size: int, cells: int = 16) -> np.ndarray:
    """A smooth random background [size, size] in [0.1, 0.9]: Gaussian noise on a (cells + 1)² grid,
    bilinearly interpolated (features about size / cells pixels across)."""
    grid = rng.normal(0, 1, (cells + 1, cells + 1))
    at = np.linspace(0, cells, size)
    i = np.minimum(at.astype(int), cells - 1)
    f = at - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    image = rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]
    image = (image - image.min()) / (np.ptp(image) + 1e-9)
    return (0.1 + 0.8 * image).astype(np.float32)


def render_reveal(rng: np.random.Generator, frames: int, size: int, hidden: int,
                  noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One clip: uint8 frames [T, size, size] and each column's visible share [T, size].

    ``noise``: a camera's, Gaussian, this many grey levels (of 255), drawn after the layout.
    """
    background = texture(rng, size)
    speed = rng.uniform(*SPEED)
    width = min(rng.uniform(*SPAN) * hidden * speed, 0.6 * size)  # covered for width / speed frames
    x, v = rng.uniform(-width / 2, size - width / 2), speed * rng.choice([-1, 1])
    centres = np.arange(size, dtype=np.float32) + 0.5
    video = np.empty((frames, size, size), np.uint8)
    visible = np.empty((frames, size), np.float32)
    for t in range(frames):
        cover = np.clip(np.minimum(centres - x, x + width - centres) + 0.5, 0, 1)  # anti-aliased edges
        visible[t] = 1 - cover
        image = background * (1 - cover)[None] + BAR * cover[None]
        if noise:
            image = image + rng.normal(0, noise / 255, image.shape).astype(np.float32)
        video[t] = np.rint(np.clip(image, 0, 1) * 255)
        x += v
        if not -width / 2 <= x <= size - width / 2:  # bounce: at most half the bar leaves the frame
            x, v = x - 2 * v, -v
    return video, visible


def needs_memory(visible: np.ndarray, window: int) -> np.ndarray:
    """Bool [T, columns]: column c is why frame t needs memory (see the module docstring)."""
    covered, shows = visible <= 0, visible > 0
    out = np.zeros(visible.shape, bool)
    for t in range(window + 1, len(visible)):
        out[t] = shows[t] & covered[t - window : t].all(axis=0) & shows[: t - window].any(axis=0)
    return out


def memory_pixels(meta: dict) -> np.ndarray:
    """Bool [T, size, size]: on each memory frame, the uncovered columns a window cannot have seen."""
    needs = needs_memory(np.asarray(meta["visible"], np.float32), meta["window"])
    return np.repeat(needs[:, None, :], meta["size"], axis=1)


def make_reveal(out_dir, num: int = 8, frames: int = 120, size: int = 64, seed: int = 0, hidden: int = 16,
                window: int = 8, noise: float = 2.0, overwrite: bool = False) -> list[Path]:
    """Write `num` reveal videos and their ground truth (see the module docstring).

    Args:
        out_dir: Directory (created if missing).
        num, frames, size: Videos, frames each, frame side in pixels.
        seed: Video i depends only on (seed, i) and the settings.
        hidden: Scale of how long the bar covers a column (0.4–1.2 × this, per video).
        window: The window the memory flags are computed for (a training context).
        noise: Camera noise, grey levels (0 for clean frames).
        overwrite: Replace videos of the same names.

    Returns:
        The videos written.
    """
    if num < 1 or frames < 2 or size < 16 or hidden < 1 or window < 1 or noise < 0:
        raise InputError(f"make-data --scene reveal: need num >= 1, frames >= 2, size >= 16, hidden >= 1, "
                         f"window >= 1, noise >= 0 (got {num}, {frames}, {size}, {hidden}, {window}, {noise})")
    out_dir = Path(out_dir)
    paths = [out_dir / f"reveal_{i:04d}.mp4" for i in range(num)]
    refuse_existing(paths, overwrite)
    for i, path in enumerate(paths):
        seeds = [seed, i, 0xBEE]
        video, visible = render_reveal(np.random.default_rng(seeds), frames, size, hidden, noise=noise)
        write_video(path, video, fps=10, crf=LOSSLESS)
        # The flags come from the shares as written, so `memory_pixels(meta)` agrees with them exactly
        # (a share under 0.0005 is written as 0: covered).
        visible = np.round(visible, 3)
        meta = {"scene": "reveal", "seed": seeds, "size": size, "hidden": hidden, "window": window,
                "noise": noise, "visible": visible.tolist(),
                "memory": needs_memory(visible, window).any(axis=1).tolist()}
        path.with_suffix(".json").write_text(json.dumps(meta))
    return paths
