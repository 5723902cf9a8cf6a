"""`convlstm eval`: one checkpoint scored on a folder of videos in several ways, on the same frames.

Modes (every one scores the one-step-ahead prediction of every frame but each video's first, frame
t+1 from frames ≤ t, so all of them are scored on exactly the same frames):

- ``stateful``: the video streamed once, the state carried from chunk to chunk (what `predict` does);
- ``window``: stateless, a sliding window of W frames: for every frame the model starts from zeros
  and reads only the last W frames (the usual alternative to carrying a state);
- ``reset``: the state starts from zeros at every chunk of `data.context` frames, as a model trained
  `--stateless` sees it;
- ``copy-last``: frame t stands for frame t+1.

Where a video has ground truth beside it (``<video>.json`` with a per-frame ``memory`` list, written
by ``make-data --scene occlusion``), the figures are also split into the frames that need memory
(what to predict was last visible longer ago than a window) and the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convlstm_cli.metrics import MetricAccumulator

MODES = ("stateful", "window", "reset", "copy-last")
GROUPS = ("all", "memory", "ordinary")


def memory_mask(path: str | Path) -> np.ndarray | None:
    """The per-frame ``memory`` flags of a video's ground truth (``<video>.json``), or None."""
    meta = Path(path).with_suffix(".json")
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    flags = data.get("memory") if isinstance(data, dict) else None
    return np.asarray(flags, dtype=bool) if isinstance(flags, list) else None


class Scores:
    """Per-mode accumulators over all frames, the memory frames and the others."""

    def __init__(self, modes: tuple[str, ...]) -> None:
        self.acc = {m: {g: MetricAccumulator() for g in GROUPS} for m in modes}

    def add(self, mode: str, pred, truth, memory: np.ndarray | None) -> None:
        """Score frames [n, C, H, W]; `memory` [n] marks the frames that need memory (None: unknown)."""
        per_frame = self.acc[mode]["all"].update(pred, truth)
        if memory is None:
            return
        for group, keep in (("memory", memory), ("ordinary", ~memory)):
            for i in np.flatnonzero(keep):
                self.acc[mode][group].add({k: float(v[i]) for k, v in per_frame.items()})

    def report(self) -> dict:
        out = {}
        base = self.acc.get("copy-last")
        for mode, groups in self.acc.items():
            row = {}
            for group, acc in groups.items():
                if not len(acc):
                    continue
                row[group] = {"frames": len(acc), **acc.means()}
                if base is not None and len(base[group]):
                    row[group]["delta_psnr"] = row[group]["psnr"] - base[group].means()["psnr"]
            out[mode] = row
        return out


def _segments(videos, tail: float | None, stride: int) -> list:
    if tail is None:
        return list(videos)
    out = []
    for v in videos:
        cut = int(round(v.frames * (1 - tail))) // stride * stride
        if v.frames - cut > stride:
            out.append(v.segment(cut, v.frames - cut))
    return out


def _memory_for(info, stride: int, n: int) -> np.ndarray | None:
    """Memory flags of the strided frames 0…n−1 of `info` (a whole video or a segment)."""
    mask = memory_mask(info.path)
    if mask is None:
        return None
    idx = info.first + np.arange(n) * stride
    return np.where(idx < len(mask), mask[np.minimum(idx, len(mask) - 1)], False)


def score_video(loaded, info, modes, window: int, chunk: int, device, precision, scores: Scores) -> int:
    """Score one video (or segment) in every mode; returns its number of scored frames."""
    from convlstm_cli.data.video import iter_frames
    from convlstm_cli.predict.streaming import stream_predict, window_predict

    d = loaded.config.data

    def frames():
        return iter_frames(info.path, d.hw(), d.channels, d.stride, info.first // d.stride, resize=d.resize)

    runs: dict[str, Callable] = {
        "stateful": lambda: stream_predict(loaded.model, frames(), 1, chunk, device, precision),
        "window": lambda: window_predict(loaded.model, frames(), window, 1, chunk, device, precision),
        "reset": lambda: stream_predict(loaded.model, frames(), 1, d.context, device, precision, reset=True),
    }
    memory = _memory_for(info, d.stride, info.strided_frames(d.stride))
    passes = [m for m in ("stateful", "window", "reset") if m in modes]
    if "copy-last" in modes and "stateful" not in passes:
        passes.insert(0, "stateful")  # copy-last needs only the frames, which the stateful pass has
    scored = 0
    for mode in passes:
        for ch in runs[mode]():
            nv = ch.scored(1)
            if nv == 0:
                continue
            truth = ch.frames[1 : 1 + nv]
            mem = None if memory is None else memory[ch.start + 1 : ch.start + 1 + nv]
            if mode in modes:
                scores.add(mode, ch.pred[:nv, 0], truth, mem)
            if mode == "stateful" and "copy-last" in modes:
                scores.add("copy-last", ch.frames[:nv], truth, mem)
            if mode == passes[0]:  # every pass scores the same frames: count them once
                scored += nv
    return scored


def evaluate_folder(checkpoint, data_dir, window: int | None = None, tail: float | None = None,
                    modes: tuple[str, ...] = MODES, device: str = "auto", precision: str = "auto",
                    chunk: int = 64, progress: Callable[[str], None] | None = None) -> dict:
    """Score a checkpoint on every usable video of `data_dir` (see the module docstring).

    Args:
        checkpoint: a run directory (best, else last) or a checkpoint file.
        data_dir: a folder of videos, or one video.
        window: W of the sliding window (default: the model's training context).
        tail: score only the last `tail` share of each video (from a zero state at the cut), as the
            tail validation split does; None scores whole videos.
        modes: which of `MODES` to run.
        device, precision, chunk: how the model runs.
        progress: called with each video's name as it starts.

    Returns:
        The report: settings, frame counts, and per mode the means over all, memory and ordinary
        frames, each with its PSNR difference to copy-last.
    """
    from convlstm_cli.checkpoint import load_model
    from convlstm_cli.data.probe import probe_videos
    from convlstm_cli.device import fallback_notes, resolve_device, resolve_precision
    from convlstm_cli.errors import InputError

    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InputError(f"--modes: choose from {', '.join(MODES)}, got {', '.join(bad) or 'none'}")
    if (window is not None and window < 1) or (tail is not None and not 0 < tail < 1) or chunk < 1:
        raise InputError("--window and --chunk must be at least 1 and --tail in (0, 1)")
    dev = resolve_device(device)
    loaded = load_model(checkpoint, dev)
    d = loaded.config.data
    window = window or d.context
    videos = _segments(probe_videos(data_dir, min_frames=2).videos, tail, d.stride)
    prec = resolve_precision(precision, dev)
    scores, frames = Scores(tuple(modes)), 0
    for info in videos:
        if progress:
            progress(info.name)
        frames += score_video(loaded, info, tuple(modes), window, chunk, dev, prec, scores)
    report = scores.report()
    memory = next((r.get("memory", {}).get("frames", 0) for r in report.values()), 0)
    return {"checkpoint": str(loaded.path), "checkpoint_step": loaded.step, "data": str(data_dir),
            "videos": len(videos), "frames": frames, "memory_frames": memory, "window": window,
            "context": d.context, "tail": tail, "device": str(dev), "precision": prec, "modes": report,
            "notes": fallback_notes(precision, prec, dev)}


def delta_text(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:+.2f}"
