"""The data path: decode + resize speed, and whether the streamer keeps up with training.

Test videos are made here (no downloads): an H.264 720p clip (moving shapes on a textured gradient,
so the encoder spends real bits) and a small 320×240 one, both decoded to 64×64 gray through
`data.video.iter_frames` (FFmpeg decode + swscale AREA resize), the path training uses. The streamer
is then run over a few small videos with the training defaults and compared with how many batches per
second the default model's training consumes (``streamer_vs_train`` ≥ 1: data is not the bottleneck).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from convlstm_cli.config import DataConfig


def synthetic_clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W]: a panning textured gradient with two moving squares and sensor noise (gray).

    The pan moves every pixel and the per-frame noise leaves real residuals, so the encoder spends
    bits like it does on camera footage (a static synthetic scene decodes unrealistically fast).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 40 + 60 * (xx / width) + 30 * (yy / height) + rng.normal(0, 12, (height, width)).astype(np.float32)
    out = np.empty((frames, height, width), np.uint8)
    side = max(4, height // 6)
    for t in range(frames):
        img = np.roll(base, 2 * t, axis=1) + rng.normal(0, 4, (height, width)).astype(np.float32)
        for k, (vy, vx) in enumerate(((3, 5), (-4, 2))):
            y0 = (height // 3 + vy * t * height // 240 + k * height // 3) % (height - side)
            x0 = (width // 4 + vx * t * width // 320) % (width - side)
            img[y0 : y0 + side, x0 : x0 + side] = 200 - 60 * k
        out[t] = np.clip(img, 0, 255)
    return out


def decode_rate(path: Path, size: tuple[int, int], repeats: int) -> dict:
    """Frames per second of a full decode + resize to `size` gray (median of repeats)."""
    from convlstm_cli.data.video import iter_frames

    rates, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(1 for _ in iter_frames(path, size=size, channels=1))
        rates.append(n / (time.perf_counter() - t0))
    return {"frames": n, "frames_per_s": statistics.median(rates)}


def array_rate(clip: Path, tmp: Path, size: int, repeats: int) -> dict:
    """Frames per second reading the same frames from a memory-mapped .npy (resized to size×size)."""
    from convlstm_cli.data.video import read_frames

    array = tmp / "frames.npy"
    np.save(array, read_frames(clip, None, 1)[None, :, 0])  # [N=1, T, H, W]: one sequence
    return decode_rate(Path(f"{array}#0"), (size, size), repeats)


def streamer_rate(paths: list[Path], batch: int, context: int, horizon: int, size: int, batches: int,
                  workers: int = 2, cache_dir: str | None = None) -> float:
    """Batches per second `ClipStreamer` delivers (after its first batch).

    With `cache_dir`, one full pass fills the frame cache first, so the timed batches read
    memory-mapped frames instead of decoding (what every epoch after the first does with `data.cache`).
    """
    from convlstm_cli.data.streamer import ClipStreamer

    def make(loop: bool) -> ClipStreamer:
        return ClipStreamer([str(p) for p in paths], batch_size=batch, context=context, horizon=horizon,
                            size=(size, size), channels=1, seed=0, shuffle=True, loop=loop, workers=workers,
                            cache_dir=cache_dir)

    if cache_dir:
        with make(loop=False) as filling:
            for _ in filling:
                pass
    with make(loop=True) as streamer:
        it = iter(streamer)
        next(it)  # start-up: threads, decoders, first windows
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches / (time.perf_counter() - t0)


def data_bench(quick: bool, batch: int, context: int, horizon: int, size: int,
               train_steps_per_s: float | None) -> dict:
    """Decode rates (720p and small source → size×size gray) and the streamer against training.

    Args:
        quick: short clips and few batches.
        batch, context, horizon, size: the streamer's settings (the default model's training sizes).
        train_steps_per_s: training steps per second of the default model (fastest rung), or None.

    Returns:
        The ``data`` section of the report.
    """
    from convlstm_cli.data.video import write_video

    hd_frames, small_frames, n_videos = (8, 40, 2) if quick else (90, 300, 4)
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="convlstm-bench-") as tmp:
        tmp = Path(tmp)
        hd = write_video(tmp / "hd720.mp4", synthetic_clip(hd_frames, 720, 1280), fps=30, crf=23,
                         options={"preset": "veryfast"})
        small = [write_video(tmp / f"small_{i}.mp4", synthetic_clip(small_frames, 240, 320, seed=i), fps=30,
                             crf=23, options={"preset": "veryfast"}) for i in range(n_videos)]
        out = {
            "decode_720p": {"source": "1280x720 H.264", **decode_rate(hd, (size, size), repeats)},
            "decode_small": {"source": "320x240 H.264", **decode_rate(small[0], (size, size), repeats)},
            "read_array": {"source": "320x240 uint8 .npy, memory-mapped", **array_rate(small[0], tmp, size, repeats)},
        }
        batches = 5 if quick else 40
        # The training default (data.workers decoding threads), and as many as the gpu sample config
        # uses where the machine has the cores for them; then the same streamer reading the frame cache.
        base = DataConfig().workers
        workers = sorted({base, max(base, min(8, os.cpu_count() or base))})
        rates = {w: streamer_rate(small, batch, context, horizon, size, batches, workers=w) for w in workers}
        cached = streamer_rate(small, batch, context, horizon, size, batches * 4, workers=workers[-1],
                               cache_dir=str(tmp / "cache"))
    out["resize_to"] = [size, size]
    rate = rates[base]
    sizes = {"batch": batch, "context": context, "horizon": horizon, "videos": n_videos}
    out["streamer"] = {"batches_per_s": rate, "frames_per_s": rate * batch * context, "workers": base, **sizes}
    out["streamer_by_workers"] = {str(w): r for w, r in rates.items()}
    out["streamer_cached"] = {"batches_per_s": cached, "frames_per_s": cached * batch * context,
                              "workers": workers[-1], **sizes}
    out["train_steps_per_s"] = train_steps_per_s
    out["streamer_vs_train"] = rate / train_steps_per_s if train_steps_per_s else None
    out["streamer_cached_vs_train"] = cached / train_steps_per_s if train_steps_per_s else None
    return out
