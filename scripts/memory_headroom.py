"""What a perfect memory could add on the occlusion scene's memory frames.

    python scripts/memory_headroom.py RUN_DIR DATA_DIR [--window 8]

Runs RUN's model as a stateless sliding window over every occlusion video in DATA_DIR (the window
mode of `convlstm eval`) and scores its memory frames twice: as predicted, and with the pixels of
the returning balls set to the truth. The second figure is the most a state could buy there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from convlstm_cli.checkpoint import load_model
from convlstm_cli.data.occlusion import memory_pixels
from convlstm_cli.data.video import iter_frames
from convlstm_cli.metrics import psnr
from convlstm_cli.predict.streaming import window_predict


def headroom(loaded, path: Path, window: int) -> tuple[list[float], list[float]]:
    """PSNRs of one video's memory frames: the window's prediction, and with the returning balls right."""
    meta = json.loads(path.with_suffix(".json").read_text())
    if "seed" not in meta:
        raise SystemExit(f"{path.with_suffix('.json')}: no seed in the ground truth; write the videos again "
                         "with this version's make-data --scene occlusion")
    d = loaded.config.data
    ball = torch.from_numpy(memory_pixels(meta))  # [T, H, W] at the clip's size
    memory = np.asarray(meta["memory"])
    as_is, perfect = [], []
    for ch in window_predict(loaded.model, iter_frames(path, d.hw(), d.channels, resize=d.resize), window):
        for i in range(ch.scored(1)):
            t = ch.start + i + 1  # pred[i, 0] forecasts frame t
            if memory[t]:
                pred, truth = ch.pred[i, 0], ch.frames[i + 1].float()
                as_is.append(float(psnr(pred, truth)))
                perfect.append(float(psnr(torch.where(ball[t], truth, pred), truth)))
    return as_is, perfect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run"), ap.add_argument("data"), ap.add_argument("--window", type=int, default=8)
    a = ap.parse_args()
    loaded = load_model(Path(a.run), torch.device("cpu"))
    pairs = [headroom(loaded, path, a.window) for path in sorted(Path(a.data).glob("*.mp4"))]
    as_is, perfect = (np.concatenate([p[k] for p in pairs]) for k in (0, 1))
    print(f"{len(as_is)} memory frames: window of {a.window} {as_is.mean():.2f} dB; with the returning "
          f"balls' pixels right {perfect.mean():.2f} dB (+{perfect.mean() - as_is.mean():.2f})")


if __name__ == "__main__":
    main()
