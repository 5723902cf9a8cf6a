"""What a perfect memory could add on a memory scene's memory frames, and how much of it a model draws.

    python scripts/memory_headroom.py RUN_DIR DATA_DIR [--window 8]

Runs RUN's model as a stateless sliding window over every occlusion or reveal video in DATA_DIR (the
window mode of `convlstm eval`) and scores its memory frames twice: as predicted, and with the pixels
a window cannot know set to the truth (the returning balls; the columns the bar uncovers). The second
figure is the most a state could buy there.

Then, streamed with its state and as the window, the share of those pixels' change (from the last
frame to the next, on them only; `metrics.change_drawn`) that the model draws:
1 all of it, 0 nothing (copy-last). PSNR over a whole frame barely sees those few pixels; a model
that carries a ball behind a bar draws more of them streamed than as a window.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from convlstm_cli.checkpoint import load_model
from convlstm_cli.data import occlusion, reveal
from convlstm_cli.data.video import iter_frames
from convlstm_cli.metrics import change_drawn, psnr
from convlstm_cli.predict.streaming import stream_predict, window_predict


def _ground_truth(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    meta = json.loads(path.with_suffix(".json").read_text())
    if "seed" not in meta:
        raise SystemExit(f"{path.with_suffix('.json')}: no seed in the ground truth; write the videos again "
                         "with this version's make-data --scene occlusion")
    scene = reveal if meta.get("scene") == "reveal" else occlusion
    return torch.from_numpy(scene.memory_pixels(meta)), np.asarray(meta["memory"])  # [T, H, W] at the clip's size


def _memory_frames(chunks, memory: np.ndarray):
    """(t, last frame, prediction of frame t, frame t) for every memory frame t of a stream's chunks."""
    for ch in chunks:
        for i in range(ch.scored(1)):
            t = ch.start + i + 1  # pred[i, 0] forecasts frame t
            if memory[t]:
                yield t, ch.frames[i].float(), ch.pred[i, 0], ch.frames[i + 1].float()


def scores(loaded, path: Path, window: int) -> dict[str, list[float]]:
    """One video's memory frames: the window's PSNRs as predicted and with the returning balls right,
    and the drawn-change sums (numerator, denominator) streamed and as the window."""
    d = loaded.config.data
    ball, memory = _ground_truth(path)
    frames = list(iter_frames(path, d.hw(), d.channels, resize=d.resize))  # decoded once, run twice
    runs = {"window": window_predict(loaded.model, frames, window),  # generators: each runs when read
            "stream": stream_predict(loaded.model, frames)}
    out = {"as_is": [], "perfect": [], "stream": [0.0, 0.0], "window": [0.0, 0.0]}
    for mode, chunks in runs.items():
        for t, last, pred, truth in _memory_frames(chunks, memory):
            num, den = change_drawn(pred, last, truth, ball[t][None])
            out[mode][0] += num
            out[mode][1] += den
            if mode == "window":
                out["as_is"].append(float(psnr(pred, truth)))
                out["perfect"].append(float(psnr(torch.where(ball[t], truth, pred), truth)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run"), ap.add_argument("data"), ap.add_argument("--window", type=int, default=8)
    a = ap.parse_args()
    loaded = load_model(Path(a.run), torch.device("cpu"))
    per_video = [scores(loaded, path, a.window) for path in sorted(Path(a.data).glob("*.mp4"))]
    as_is, perfect = (np.concatenate([v[k] for v in per_video]) for k in ("as_is", "perfect"))
    if not len(as_is):
        raise SystemExit(f"{a.data}: no memory frames for a window of {a.window} (make-data --scene "
                         "occlusion or reveal writes them; try a longer --hidden or more --frames)")
    print(f"{len(as_is)} memory frames: window of {a.window} {as_is.mean():.2f} dB; with the pixels "
          f"a window cannot know right {perfect.mean():.2f} dB (+{perfect.mean() - as_is.mean():.2f})")
    share = {m: sum(v[m][0] for v in per_video) / sum(v[m][1] for v in per_video)
             for m in ("stream", "window")}
    print(f"share of their change drawn: streamed {share['stream']:.3f}, "
          f"window of {a.window} {share['window']:.3f}")


if __name__ == "__main__":
    main()
