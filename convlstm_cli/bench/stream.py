"""Streaming inference with a carried state against stateless sliding-window inference.

Streaming: one clip, one frame per call. Each call folds the new frame into the encoder state carried
from the previous call and forecasts `horizon` frames from it, so a frame costs the same at frame 10
and at frame 1,000 (`flatness` = median per-frame time over the long clip ÷ over the short one, ~1).

Sliding window: the usual stateless alternative re-feeds the last W frames from a zero state for every
prediction, so each prediction costs W encoder steps plus the same forecast. The speed-up of
streaming is therefore (W·E + F) / (E + F), E an encoder step and F the forecast, which approaches W
only when the forecast is cheap next to an encoder step; the encoder-only ratio (state update versus
re-encoding the window) is reported beside it.

Every call is synchronised, so these are latencies (one stream, batch 1), not throughput.
"""

from __future__ import annotations

import statistics
import time

import torch

from convlstm_cli.bench.cases import ModelCase
from convlstm_cli.bench.timing import PeakMemory, synchronize
from convlstm_cli.device import autocast


def _timed(fn, device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def _stream(model, frames, n: int, horizon: int, device, precision: str, encode_only: bool) -> list[float]:
    """Seconds of each of the first n frames, carrying the state from frame to frame."""
    box = {"state": None}

    def one(t: int) -> None:
        x = frames[:, t : t + 1]
        if encode_only:
            box["state"], _ = model.encode(x, box["state"])
        else:
            _, box["state"] = model(x, box["state"], horizon)

    with torch.inference_mode(), autocast(device, precision):
        return [_timed(lambda t=t: one(t), device) for t in range(n)]


def _window(model, frames, w: int, count: int, horizon: int, device, precision: str, encode_only: bool) -> float:
    """Median seconds per prediction, re-encoding the last w frames from zero each time."""

    def one(i: int) -> None:
        x = frames[:, i : i + w]
        if encode_only:
            model.encode(x, None)
        else:
            model(x, None, horizon)

    with torch.inference_mode(), autocast(device, precision):
        one(0)
        return statistics.median(_timed(lambda i=i: one(i), device) for i in range(count))


def stream_bench(case: ModelCase, device: torch.device, precision: str, channels_last: bool,
                 lengths: tuple[int, int], windows: tuple[int, ...], predictions: int, horizon: int = 1) -> dict:
    """Per-frame streaming cost at two clip lengths and the sliding-window cost for each W.

    Args:
        case: the model (its frame size and channels are used; batch is 1).
        device, precision, channels_last: how the model runs.
        lengths: (short, long) clip lengths in frames; flatness = per-frame time long ÷ short.
        windows: the W of the sliding-window baselines; the first is the headline one.
        predictions: sliding-window predictions timed per W (median).
        horizon: frames forecast per call, for both.

    Returns:
        The ``stream`` section of the report.
    """
    torch.manual_seed(0)
    model = case.build().to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    short, long = lengths
    n = max(long, max(windows) + predictions)
    frames = torch.rand(1, n, case.channels, case.size, case.size, generator=torch.Generator().manual_seed(0))
    frames = frames.to(device)
    args = (horizon, device, precision)
    with PeakMemory(device) as mem:
        # Warm-up as long as the short clip: on a GPU the first hundred or so calls still run slower
        # (allocator growth, clocks), which made the short clip look slower than the long one.
        _stream(model, frames, short, *args, encode_only=False)
        # The short clip runs before and after the long one, so a change of load on a shared machine
        # during the run weighs on both sides of the ratio alike.
        short_t = _stream(model, frames, short, *args, False)
        long_t = _stream(model, frames, long, *args, False)
        short_t += _stream(model, frames, short, *args, False)
    # Medians of the per-frame latencies: a frame that got descheduled by another process must not
    # decide the figure, while a cost that grew with the clip would still move the median.
    per_frame_short, per_frame_long = statistics.median(short_t), statistics.median(long_t)
    enc_frame = statistics.median(_stream(model, frames, short, *args, encode_only=True))
    per_w = {}
    for w in windows:
        full = _window(model, frames, w, predictions, *args, encode_only=False)
        enc = _window(model, frames, w, predictions, *args, encode_only=True)
        per_w[str(w)] = {
            "per_prediction_ms": full * 1e3,
            "predictions_per_s": 1 / full,
            "speedup_vs_window": full / per_frame_long,
            "encode_ms": enc * 1e3,
            "encode_speedup_vs_window": enc / enc_frame,
        }
    head = per_w[str(windows[0])]
    return {
        "model": case.name,
        "precision": precision,
        "channels_last": channels_last,
        "batch": 1,
        "horizon": horizon,
        "lengths": list(lengths),
        "per_frame_ms": {str(short): per_frame_short * 1e3, str(long): per_frame_long * 1e3},
        "mean_per_frame_ms": {str(short): statistics.mean(short_t) * 1e3, str(long): statistics.mean(long_t) * 1e3},
        "frames_per_s": {str(short): 1 / per_frame_short, str(long): 1 / per_frame_long},
        "flatness": per_frame_long / per_frame_short,
        "encode_per_frame_ms": enc_frame * 1e3,
        "window": windows[0],
        "speedup_vs_window": head["speedup_vs_window"],
        "encode_speedup_vs_window": head["encode_speedup_vs_window"],
        "windows": per_w,
        "peak_mem_mb": mem.mb,
    }
