"""Streaming inference with a carried state against stateless sliding-window inference.

Streaming: one clip, one frame per call. Each call folds the new frame into the state carried from
the previous call and predicts from it, so a frame costs the same at frame 10 and at frame 1,000
(`flatness` = median per-frame time over the long clip ÷ over the short one, ~1).

Sliding window: the usual stateless alternative re-feeds the last W frames from a zero state for every
prediction, so each prediction costs W recurrent steps plus the prediction itself. The speed-up of
streaming is therefore (W·E + F) / (E + F), E a recurrent step and F what it takes to predict from
the state, which approaches W only when F is small next to E. The window's calls alternate with frames
of a carried-state stream, and `speedup_vs_window` is the ratio of the two medians (each window row
keeps the stream's as `stream_ms`): both sides see the same load on a shared machine. Two models
show both ends:

- ``default``, the encoder-forecaster `convlstm train` makes: its forecaster mirrors the encoder, so F
  (a one-step forecast through every level and the up-sampling head) costs about an encoder step and
  the ratio stays near (W + 1)/2; the encoder-only ratio (state update against re-encoding the
  window) is reported beside it.
- ``openstl-s``, the stacked ConvLSTM (`StackedConvLSTM.observe`): a 1×1 head on the top layer
  predicts the next frame, F is ~0 and the ratio approaches W.

Each model runs eagerly and, with ``compile``, as a torch.compile'd function (one graph per input
shape: the first frame, a frame with a carried state, each W); the headline is the faster path, and
the two sides of every ratio always run the same path. Every call is synchronised, so these are
latencies (one stream, batch 1), not throughput.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from convlstm_cli.bench.cases import ModelCase
from convlstm_cli.bench.timing import PeakMemory, synchronize
from convlstm_cli.device import autocast


@dataclass
class Runner:
    """One model's streaming calls on one path.

    step(frames [1, 1, C, H, W], state) → new state, predicting from it on the way;
    window(frames [1, W, C, H, W]) → the prediction from a zero state.
    encode_step / encode_window: the same without the prediction (encoder-forecaster, eager only).
    """

    step: Callable
    window: Callable
    encode_step: Callable | None = None
    encode_window: Callable | None = None


def runner(model: torch.nn.Module, horizon: int, compiled: bool) -> Runner:
    """The calls for an `EncoderForecaster` or a `StackedConvLSTM`, compiled or eager."""

    def maybe_compile(fn):
        # dynamic=False: one graph per frame count rather than a symbolic time axis.
        return torch.compile(fn, dynamic=False) if compiled else fn

    if hasattr(model, "observe"):  # StackedConvLSTM: its one-step prediction is the 1×1 head
        if horizon != 1:
            raise ValueError("the stacked model streams one-step predictions (horizon 1)")
        observe = maybe_compile(model.observe)
        return Runner(lambda x, s: observe(x, s)[1], lambda x: observe(x)[0])
    forward = maybe_compile(model)
    run = Runner(lambda x, s: forward(x, s, horizon)[1], lambda x: forward(x, None, horizon)[0])
    if not compiled:
        run.encode_step = lambda x, s: model.encode(x, s)[0]
        run.encode_window = lambda x: model.encode(x, None)[0]
    return run


def _timed(fn, device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def _stream(step: Callable, frames, n: int, device, carried: dict | None = None, start: int = 0) -> list[float]:
    """Seconds of each of frames start … start+n-1, carrying the state from frame to frame.

    `carried` holds the state between calls ({"state": …}), so one clip can be played in pieces;
    without it the clip starts from a zero state.
    """
    box = carried if carried is not None else {"state": None}

    def one(t: int) -> None:
        box["state"] = step(frames[:, t : t + 1], box["state"])

    return [_timed(lambda t=t: one(t), device) for t in range(start, start + n)]


# Carried-state frames timed after each window call: the first of them finds caches the window call
# has filled with its own data, the median is over the rest, as a stream running alone sees them.
FRAMES_PER_WINDOW = 8


def _window(window: Callable, step: Callable, frames, w: int, count: int, device) -> tuple[float, float]:
    """Median seconds per prediction re-encoding the last w frames from zero, and per frame of a
    carried-state stream timed in alternation with it (the two sides of a ratio, same conditions)."""
    window(frames[:, :w])
    carried = {"state": None}
    _stream(step, frames, w, device, carried)  # the stream at frame w, where the first window ends
    win, per_frame = [], []
    for i in range(count):
        win.append(_timed(lambda i=i: window(frames[:, i : i + w]), device))
        per_frame += _stream(step, frames, FRAMES_PER_WINDOW, device, carried, w + i * FRAMES_PER_WINDOW)
    return statistics.median(win), statistics.median(per_frame)


def measure_path(run: Runner, frames, device, lengths: tuple[int, ...], windows: tuple[int, ...],
                 predictions: int) -> dict:
    """Per-frame streaming times at each clip length and the sliding-window cost for each W.

    With two lengths the long clip is played in pieces of the short length, each piece followed by
    a whole short clip from a zero state: the two interleave in time, so a change of load on a shared
    machine (seconds long, ±50 % on this project's 2-core VM) weighs on both sides of the flatness
    ratio alike, while the long clip's state still runs on through all of its frames.
    """
    short = lengths[0]
    # Warm-up as long as the short clip: on a GPU the first hundred or so calls still run slower
    # (allocator growth, clocks), which made the short clip look slower than the long one.
    _stream(run.step, frames, short, device)
    if len(lengths) == 1:
        times = {short: _stream(run.step, frames, short, device)}
    else:
        long, carried = lengths[1], {"state": None}
        times = {short: [], long: []}
        for start in range(0, long, short):
            times[long] += _stream(run.step, frames, min(short, long - start), device, carried, start)
            times[short] += _stream(run.step, frames, short, device)
    # Medians of the per-frame latencies: a frame that got descheduled by another process must not
    # decide the figure, while a cost that grew with the clip would still move the median.
    per_frame = {n: statistics.median(t) for n, t in times.items()}
    out: dict = {
        "per_frame_ms": {str(n): v * 1e3 for n, v in per_frame.items()},
        "mean_per_frame_ms": {str(n): statistics.mean(t) * 1e3 for n, t in times.items()},
        "frames_per_s": {str(n): 1 / v for n, v in per_frame.items()},
    }
    if len(lengths) > 1:
        out["flatness"] = per_frame[lengths[1]] / per_frame[short]
    per_w = {}
    for w in windows:
        full, frame = _window(run.window, run.step, frames, w, predictions, device)
        row = {"per_prediction_ms": full * 1e3, "predictions_per_s": 1 / full, "stream_ms": frame * 1e3,
               "speedup_vs_window": full / frame}
        if run.encode_step:
            enc, enc_frame = _window(run.encode_window, run.encode_step, frames, w, predictions, device)
            row.update(encode_ms=enc * 1e3, encode_stream_ms=enc_frame * 1e3,
                       encode_speedup_vs_window=enc / enc_frame)
        per_w[str(w)] = row
    head = per_w[str(windows[0])]
    out.update(window=windows[0], speedup_vs_window=head["speedup_vs_window"], windows=per_w)
    if run.encode_step:
        out.update(encode_per_frame_ms=head["encode_stream_ms"], encode_speedup_vs_window=head["encode_speedup_vs_window"])
    return out


def stream_bench(case: ModelCase, device: torch.device, precision: str, channels_last: bool,
                 lengths: tuple[int, ...], windows: tuple[int, ...], predictions: int, horizon: int = 1,
                 compile: bool = False) -> dict:
    """Streaming against sliding windows for one model, eager and (with `compile`) compiled.

    Args:
        case: the model (its frame size and channels are used; batch is 1).
        device, precision, channels_last: how the model runs.
        lengths: clip lengths in frames, (short, long) for a flatness figure or (short,) without.
        windows: the W of the sliding-window baselines; the first is the headline one.
        predictions: sliding-window predictions timed per W (median).
        horizon: frames forecast per call, for both sides.
        compile: also time the torch.compile'd path.

    Returns:
        The fastest path's figures at the top level (``path`` names it), every path's under ``paths``.
    """
    torch.manual_seed(0)
    model = case.build().to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n = max(max(lengths), max(windows) + predictions * FRAMES_PER_WINDOW)
    frames = torch.rand(1, n, case.channels, case.size, case.size, generator=torch.Generator().manual_seed(0))
    frames = frames.to(device)
    paths: dict = {}
    with PeakMemory(device) as mem, torch.inference_mode(), autocast(device, precision):
        for name in ("eager", "compiled") if compile else ("eager",):
            try:
                paths[name] = measure_path(runner(model, horizon, name == "compiled"), frames, device,
                                           lengths, windows, predictions)
            except Exception as e:  # noqa: BLE001 - the compiled path is reported "where it works"
                if name == "eager":
                    raise
                paths[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            finally:
                if name == "compiled":
                    torch._dynamo.reset()
    timed = {k: p for k, p in paths.items() if "error" not in p}
    best = min(timed, key=lambda k: timed[k]["per_frame_ms"][str(lengths[-1])])
    return {
        "model": case.name,
        "precision": precision,
        "channels_last": channels_last,
        "batch": 1,
        "horizon": horizon,
        "lengths": list(lengths),
        "path": best,
        **timed[best],
        "paths": paths,
        "peak_mem_mb": mem.mb,
    }
