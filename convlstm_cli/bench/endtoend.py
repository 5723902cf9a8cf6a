"""The data path as training feels it: frames/s of real training steps fed from HD H.264 sources,
against the same frames already shrunk to the training size.

Decoding and training share the machine's cores, so the streamer's rate in isolation says little.
Here the same model (the `convlstm train` defaults) runs the same `train_step`s, fed by the
`ClipStreamer` with the training defaults (`data.cache: auto`, so later epochs read the frame cache),
from 1280×720 H.264 clips and from those clips' frames at 64×64. Each is timed over its first
epoch (decoding) and the later ones (the cache): ``later_ratio`` ≥ 0.95 means HD sources train as
fast as small ones once decoded. The two alternate over `ROUNDS` rounds (each with a fresh cache) and
their step times are pooled: on a shared machine a slow spell then lands on both sides, not on one.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from convlstm_cli.bench.datapath import synthetic_clip


def _sources(tmp: Path, quick: bool) -> tuple[list[Path], list[Path]]:
    from convlstm_cli.data.video import read_frames, write_video

    n, frames, (h, w) = (2, 40, (360, 640)) if quick else (4, 150, (720, 1280))
    hd, small = [], []
    for i in range(n):
        clip = synthetic_clip(frames, h, w, seed=i)
        hd.append(write_video(tmp / "hd" / f"clip{i}.mp4", clip, fps=30, crf=23, options={"preset": "veryfast"}))
        shrunk = read_frames(hd[-1], (64, 64), 1, resize="crop")  # what training reads from the HD clip
        small.append(write_video(tmp / "small" / f"clip{i}.mp4", shrunk, fps=30, crf=18))
    return hd, small


ROUNDS = 2


def train_times(paths: list[Path], cache_dir: Path, device, precision: str, epochs: int, quick: bool) -> dict:
    """Wall time of every training step over `epochs` passes, keyed by pass (rank in the streamer's
    epochs, 0 = the first); with ``frames_per_step`` and whether the cache was on."""
    from convlstm_cli.config import load_config
    from convlstm_cli.data.cache import plan_cache
    from convlstm_cli.data.probe import probe_videos
    from convlstm_cli.data.streamer import ClipStreamer
    from convlstm_cli.device import autocast, to_unit
    from convlstm_cli.model.forecaster import EncoderForecaster
    from convlstm_cli.step import make_optimizer, train_step

    tiny = ["model.hidden_channels=8,16", "model.stem_channels=8", "data.batch_size=2", "data.context=4",
            "model.horizon=2"]
    cfg = load_config(None, tiny if quick else [])  # the `convlstm train` defaults (a tiny model with --quick)
    d = cfg.data
    videos = probe_videos(paths[0].parent).videos
    use_cache, _ = plan_cache(d.cache, videos, d.hw(), d.channels, d.stride, d.resize, cache_dir, d.cache_budget_gb)
    torch.manual_seed(0)
    model = EncoderForecaster.from_config(cfg.model).to(device).to(memory_format=torch.channels_last)
    opt, fused = make_optimizer(model.parameters(), device, 1e-4)
    streamer = ClipStreamer(videos, d.batch_size, d.context, cfg.model.horizon, d.hw(), d.channels, workers=d.workers,
                            cache_dir=str(cache_dir) if use_cache else None, resize=d.resize, random_crop=True)
    params, amp = list(model.parameters()), lambda: autocast(device, precision)

    def start(inputs, reset, s):
        return model.initial_state(inputs, s.reset(reset) if s else None)

    times: dict[int, list[float]] = {}
    state, frames_per_step = None, d.batch_size * d.context
    t0 = time.perf_counter()
    with streamer:
        for batch in streamer:
            if batch.epoch >= epochs:
                break
            x, y = to_unit(batch.inputs, device), to_unit(batch.targets, device)
            _, _, state = train_step(model, opt, [(x, y, batch.reset)], state, params=params, fused=fused, amp=amp,
                                     grad_clip=1.0, start=start)
            now = time.perf_counter()
            times.setdefault(batch.epoch, []).append(now - t0)  # wall time of the step, waiting for data included
            t0 = now
    order = sorted(times)
    return {"times": {i: times[e] for i, e in enumerate(order)}, "frames_per_step": frames_per_step,
            "cache": use_cache}


def epoch_rates(times: dict[int, list[float]], frames_per_step: int, startup: int = 1) -> dict:
    """Frames/s of the first pass and of the later ones from step times keyed by batch epoch.

    With more lanes than videos a batch's epoch advances by more than one at a time, so the first
    pass is the lowest epoch seen, not epoch 0. Its first `startup` steps (start-up, first decode) are
    left out.
    """
    order = sorted(times)
    first = statistics.median(times[order[0]][startup:]) if order and len(times[order[0]]) > startup else None
    later = [t for e in order[1:] for t in times[e]]
    return {"first_epoch_frames_per_s": frames_per_step / first if first else None,
            "later_epochs_frames_per_s": frames_per_step / statistics.median(later) if later else None,
            "steps": {str(e): len(ts) for e, ts in times.items()}}


def end_to_end_bench(quick: bool, device: torch.device, precision: str) -> dict:
    """The ``data.end_to_end`` section: HD sources against pre-shrunk ones, first and later epochs."""
    epochs, rounds = (2, 1) if quick else (4, ROUNDS)
    pooled: dict[str, dict] = {"hd": {}, "small": {}}
    with tempfile.TemporaryDirectory(prefix="convlstm-e2e-") as tmp:
        tmp = Path(tmp)
        sources = dict(zip(("hd", "small"), _sources(tmp, quick)))
        for r in range(rounds):
            for kind, paths in sources.items():
                run = train_times(paths, tmp / f"cache-{kind}-{r}", device, precision, epochs, quick)
                for i, ts in run["times"].items():  # each round's start-up step left out
                    pooled[kind].setdefault(i, []).extend(ts[1:] if i == 0 else ts)
                frames, cache = run["frames_per_step"], run["cache"]
    out = {kind: {**epoch_rates(times, frames, startup=0), "cache": cache} for kind, times in pooled.items()}
    out["source"] = "640x360" if quick else "1280x720 H.264"
    out["rounds"] = rounds
    for key in ("first_epoch_frames_per_s", "later_epochs_frames_per_s"):
        h, s = out["hd"][key], out["small"][key]
        out[key.replace("frames_per_s", "ratio")] = h / s if h and s else None  # epoch_rates: a rate or None
    return out
