"""Built-in long-dependency data: balls that vanish behind occluders, or leave the frame, for longer
than a training chunk, and come back where their motion says.

Each video: a few balls of different brightness move at constant velocity and bounce off the walls
of an arena. One or two vertical bars occlude them for about ``hidden`` frames each time they pass
(the bar is as wide as ``hidden`` frames of the ball's travel plus the ball); with ``margin`` the arena
is wider than the frame, so balls also leave the frame and come back. A model that predicts only
from the last few frames cannot know when and where a ball comes back; one that carries a state can.

Ground truth beside every ``occlusion_0000.mp4``: ``occlusion_0000.json`` with, per frame,

- ``visible``: for each ball, the visible share of its disc (0 hidden … 1 in full view);
- ``memory``: the frame needs memory — some ball shows in it, but showed (a sliver counts) in at
  most one of the ``window`` frames before it (so a window of that length can know neither where it
  is going nor, often, that it exists), while it had been in full view before that. A ball
  comes out from behind a bar a sliver at a time, so these are the frames of its first slivers:
  once a window has seen two, it knows where the ball is and which way it moves.

`convlstm eval` reports every mode on the memory frames and on the others separately.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convlstm_cli.data.video import LOSSLESS, refuse_existing, write_video
from convlstm_cli.errors import InputError

VISIBLE = 0.3  # a ball counts as in view when this share of it is visible
GLIMPSE = 0.01  # ... and as showing when this share is (about half a pixel: a sliver a window sees)


@dataclass
class Ball:
    pos: np.ndarray  # (y, x) in arena pixels (the frame is x in [0, size))
    vel: np.ndarray
    radius: float
    value: float


def _balls(rng: np.random.Generator, size: int, count: int, speed: tuple[float, float]) -> list[Ball]:
    out = []
    for k in range(count):
        radius = rng.uniform(0.05, 0.08) * size
        v = rng.uniform(*speed) * rng.choice([-1, 1])
        out.append(Ball(np.array([rng.uniform(radius, size - radius), rng.uniform(0, size)]),
                        np.array([rng.uniform(-0.15, 0.15) * abs(v), v]), radius, 0.55 + 0.45 * k / max(count - 1, 1)))
    return out


def _bars(rng: np.random.Generator, size: int, count: int, width: float) -> list[tuple[float, float]]:
    """Occluding bars as (x0, x1), apart from each other and from the frame's edges."""
    slots = np.linspace(0, size, count + 2)[1:-1]
    return [(c - width / 2, c + width / 2) for c in slots + rng.uniform(-0.05, 0.05, count) * size]


def render_occlusion(rng: np.random.Generator, frames: int, size: int, hidden: int, margin: int,
                     balls: int = 2, noise: float = 0.0, leave_out: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One clip: uint8 frames [T, size, size] and the visible share of each ball [T, balls].

    ``noise`` is a camera's: Gaussian, this many grey levels (of 255) per pixel and frame, drawn
    after the scene's layout, so it changes no ball or bar. ``leave_out`` renders the same clip
    without that ball (its visible shares stay): the two differ exactly in that ball's pixels.
    """
    speed = (0.8, 1.4)
    radius_max = 0.08 * size
    width = min(hidden * np.mean(speed) + 2 * radius_max, 0.6 * size)  # hidden ≈ width / speed
    n_bars = 2 if 2 * width <= 0.5 * size and rng.random() < 0.5 else 1  # at most half the frame occluded
    bars = _bars(rng, size, n_bars, width)
    things = _balls(rng, size, balls, speed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    occluded = np.zeros((size, size), bool)
    for x0, x1 in bars:
        occluded |= (xx >= x0) & (xx < x1)
    video = np.empty((frames, size, size), np.uint8)
    visible = np.zeros((frames, balls), np.float32)
    for t in range(frames):
        image = np.full((size, size), 0.08, np.float32)
        for j, b in enumerate(things):
            disc = np.clip(b.radius - np.hypot(yy - b.pos[0], xx - b.pos[1]) + 0.5, 0, 1)
            area = np.pi * b.radius**2
            visible[t, j] = float((disc * ~occluded).sum() / area) if area else 0.0
            if j != leave_out:
                image = image * (1 - disc) + b.value * disc
            _move(b, size, margin)
        image[occluded] = 0.35  # the occluder is in front of every ball
        if noise:  # without it copy-last is exact whenever nothing is in view (PSNR at its cap)
            image = image + rng.normal(0, noise / 255, image.shape).astype(np.float32)
        video[t] = np.rint(np.clip(image, 0, 1) * 255)
    return video, np.clip(visible, 0, 1)


def _move(b: Ball, size: int, margin: int) -> None:
    b.pos = b.pos + b.vel
    lo = np.array([b.radius, -margin + b.radius])
    hi = np.array([size - b.radius, size + margin - b.radius])
    for axis in range(2):  # the arena's walls (beyond the frame's sides when margin > 0)
        if b.pos[axis] < lo[axis]:
            b.pos[axis], b.vel[axis] = 2 * lo[axis] - b.pos[axis], -b.vel[axis]
        elif b.pos[axis] > hi[axis]:
            b.pos[axis], b.vel[axis] = 2 * hi[axis] - b.pos[axis], -b.vel[axis]


def memory_frames(visible: np.ndarray, window: int) -> np.ndarray:
    """Frames [T] that need memory (see the module docstring) from the visible shares [T, balls]."""
    return needs_memory(visible, window).any(axis=1)


def needs_memory(visible: np.ndarray, window: int) -> np.ndarray:
    """Bool [T, balls]: ball j is why frame t needs memory."""
    seen, shows = visible >= VISIBLE, visible >= GLIMPSE
    out = np.zeros(seen.shape, bool)
    for t in range(len(seen)):
        # Slivers count as sightings: a window that saw a ball's edge come out knows where it is.
        recent = shows[max(0, t - window) : t].sum(axis=0)
        earlier = seen[: max(0, t - window)].any(axis=0)
        out[t] = shows[t] & (recent < 2) & earlier
    return out


def make_occlusion(out_dir, num: int = 8, frames: int = 120, size: int = 64, seed: int = 0, hidden: int = 20,
                   margin: int = 0, window: int = 8, noise: float = 2.0, overwrite: bool = False) -> list[Path]:
    """Write `num` occlusion videos and their ground truth (see the module docstring).

    Args:
        out_dir: Directory (created if missing).
        num, frames, size: Videos, frames each, frame side in pixels.
        seed: Video i depends only on (seed, i) and the settings.
        hidden: Frames a ball stays behind an occluder (about; longer than a training chunk).
        margin: How far (pixels) balls may travel outside the frame before they turn back.
        window: The window the memory flags are computed for (a training context; `convlstm eval`
            compares against a sliding window of this length by default).
        noise: Camera noise, grey levels (see `render_occlusion`; 0 for clean frames).
        overwrite: Replace videos of the same names.

    Returns:
        The videos written.
    """
    if num < 1 or frames < 2 or size < 16 or hidden < 1 or margin < 0 or window < 1 or noise < 0:
        raise InputError(f"make-data --scene occlusion: need num >= 1, frames >= 2, size >= 16, hidden >= 1, "
                         f"margin >= 0, window >= 1, noise >= 0 "
                         f"(got {num}, {frames}, {size}, {hidden}, {margin}, {window}, {noise})")
    out_dir = Path(out_dir)
    paths = [out_dir / f"occlusion_{i:04d}.mp4" for i in range(num)]
    refuse_existing(paths, overwrite)
    for i, path in enumerate(paths):
        rng = np.random.default_rng([seed, i, 0x0CC])  # written beside the video: it renders again
        video, visible = render_occlusion(rng, frames, size, hidden, margin, noise=noise)
        write_video(path, video, fps=10, crf=LOSSLESS)
        meta = {"scene": "occlusion", "seed": [seed, i, 0x0CC], "size": size, "hidden": hidden, "margin": margin,
                "window": window, "noise": noise,
                "visible": np.round(visible, 3).tolist(), "memory": memory_frames(visible, window).tolist()}
        path.with_suffix(".json").write_text(json.dumps(meta))
    return paths


def memory_pixels(meta: dict) -> np.ndarray:
    """Bool [T, size, size]: the pixels, on each memory frame, of the balls that need memory there.

    Renders the clip again from its ground truth (``meta``, as `make_occlusion` wrote it) with and
    without each ball; the pixels that differ are the ball's. What the headroom of a perfect memory
    is measured on (``scripts/memory_headroom.py``).
    """
    args = (len(meta["visible"]), meta["size"], meta["hidden"], meta["margin"])
    full, visible = render_occlusion(np.random.default_rng(meta["seed"]), *args, noise=meta["noise"])
    needs = needs_memory(visible, meta["window"])
    out = np.zeros(full.shape, bool)
    for j in range(visible.shape[1]):
        without, _ = render_occlusion(np.random.default_rng(meta["seed"]), *args, noise=meta["noise"], leave_out=j)
        out[needs[:, j]] |= full[needs[:, j]] != without[needs[:, j]]
    return out
