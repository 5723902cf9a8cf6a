"""Where one model streamed wins or loses against another run as a window, frame by frame.

    python scripts/memory_split.py STATEFUL_RUN STATELESS_RUN DATA_DIR [--window 8]

Streams STATEFUL_RUN's model with its state and runs STATELESS_RUN's as a sliding window of W frames
(the two modes `convlstm eval` compares) over every occlusion or reveal video in DATA_DIR, and
splits the one-step-ahead PSNR (mean over frames, as eval) three ways: a video's first W frames
(nothing to remember yet, and the stream starts from zero state as every window does), the other
ordinary frames, and the memory frames. The README's Memory section found the stateful recipe's
loss on the ordinary frames in the first group with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from convlstm_cli.checkpoint import load_model
from convlstm_cli.compare import memory_mask
from convlstm_cli.data.video import iter_frames
from convlstm_cli.metrics import psnr
from convlstm_cli.predict.streaming import stream_predict, window_predict

GROUPS = ("first frames", "other ordinary", "memory")


def per_frame_psnr(chunks) -> dict[int, float]:
    """{t: PSNR of the prediction of frame t from the frames before it} over a stream's chunks."""
    out = {}
    for ch in chunks:
        for i in range(ch.scored(1)):
            out[ch.start + i + 1] = float(psnr(ch.pred[i, 0].float(), ch.frames[i + 1].float()))
    return out


def split(path: Path, stateful, stateless, window: int) -> dict[str, list[tuple[float, float]]]:
    """One video's (streamed, window) PSNR pairs per group."""
    memory = memory_mask(path)  # the ground truth `convlstm eval` reads
    if memory is None:
        raise SystemExit(f"{path.with_suffix('.json')}: no memory flags (make-data --scene occlusion or reveal)")
    d = stateful.config.data
    frames = list(iter_frames(path, d.hw(), d.channels, resize=d.resize))
    a = per_frame_psnr(stream_predict(stateful.model, frames))
    b = per_frame_psnr(window_predict(stateless.model, frames, window))
    out = {g: [] for g in GROUPS}
    for t in sorted(set(a) & set(b)):
        group = "memory" if memory[t] else "first frames" if t <= window else "other ordinary"
        out[group].append((a[t], b[t]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stateful"), ap.add_argument("stateless"), ap.add_argument("data")
    ap.add_argument("--window", type=int, default=8)
    a = ap.parse_args()
    cpu = torch.device("cpu")
    runs = load_model(Path(a.stateful), cpu), load_model(Path(a.stateless), cpu)
    videos = sorted(Path(a.data).glob("*.mp4"))
    if not videos:
        raise SystemExit(f"{a.data}: no .mp4 videos (make-data --scene occlusion or reveal writes them)")
    pairs = {g: [] for g in GROUPS}
    for path in videos:
        for g, p in split(path, *runs, a.window).items():
            pairs[g] += p
    print(f"{a.stateful} streamed against {a.stateless} as a window of {a.window}, PSNR dB:")
    for g, p in pairs.items():
        if p:
            s, w = np.asarray(p).mean(axis=0)
            print(f"  {g:15s} {len(p):5d} frames: streamed {s:.2f}, window {w:.2f} ({s - w:+.2f})")


if __name__ == "__main__":
    main()
