"""What a perfect memory could add on the occlusion scene's memory frames.

    python scripts/memory_headroom.py RUN_DIR DATA_DIR [--window 8]

Scores RUN's model as a stateless sliding window on the memory frames of every occlusion video in
DATA_DIR (as `convlstm eval` does), then again with the pixels of the returning balls set to the
truth: the second figure is the most a state could buy on those frames.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from convlstm_cli import checkpoint
from convlstm_cli.data.occlusion import memory_pixels
from convlstm_cli.data.video import read_frames


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    return min(100.0, float(-10 * np.log10(max(((pred - truth) ** 2).mean(), 1e-10))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run"), ap.add_argument("data"), ap.add_argument("--window", type=int, default=8)
    a = ap.parse_args()
    model = checkpoint.load_model(Path(a.run)).model.eval()
    window, perfect = [], []
    for path in sorted(Path(a.data).glob("*.mp4")):
        meta = json.loads(path.with_suffix(".json").read_text())
        if "seed" not in meta:
            raise SystemExit(f"{path.with_suffix('.json')}: no seed in the ground truth; write the videos again "
                             "with this version's make-data --scene occlusion")
        size = meta["size"]
        x = torch.from_numpy(read_frames(path, (size, size), 1, resize="crop")).float() / 255
        ball = memory_pixels(meta)
        flagged = np.flatnonzero(meta["memory"])
        for t in flagged[flagged > 0]:  # frame t predicted from the frames before it
            with torch.no_grad():
                pred = model(x[None, max(0, t - a.window) : t], None, 1)[0][0, 0, 0].clamp(0, 1).numpy()
            truth = x[t, 0].numpy()
            window.append(psnr(pred, truth))
            perfect.append(psnr(np.where(ball[t], truth, pred), truth))
    print(f"{len(window)} memory frames: window of {a.window} {np.mean(window):.2f} dB; with the returning "
          f"balls' pixels right {np.mean(perfect):.2f} dB (+{np.mean(perfect) - np.mean(window):.2f})")


if __name__ == "__main__":
    main()
