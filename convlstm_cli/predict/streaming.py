"""Streaming inference: a clip's frames through a model chunk by chunk, the state carried.

`stream_predict` yields, for every frame t, the model's forecast of t+1 … t+horizon together with the
frames that are their ground truth, holding at most chunk + horizon decoded frames; `encode_context`
folds the first frames of a clip into an encoder state for a forecast. Neither keeps more than one
chunk, so a clip of any length runs in constant memory. `predict.run` scores and writes what they yield.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from convlstm_cli.device import autocast, to_unit


def frames_to_unit(frames_u8: list[np.ndarray], device: torch.device) -> Tensor:
    """Decoded uint8 frames [C, H, W] → one float tensor [T, C, H, W] in [0, 1] on `device`."""
    return to_unit(torch.from_numpy(np.stack(frames_u8)), device)


@dataclass
class StreamChunk:
    """One chunk of a stream: inputs [start, start+n) and what the model made of them.

    `pred[i, k]` forecasts frame start+i+k+1; `future` holds the frames after the inputs that were
    already decoded (up to horizon of them; fewer at the clip's end), so `frames` = inputs ‖ future
    are the ground truth, and `frames_u8` the same as decoded.
    """

    start: int
    frames_u8: np.ndarray  # uint8 [n + m, C, H, W]
    frames: Tensor  # float [n + m, C, H, W] in [0, 1], on the model's device
    pred: Tensor  # float32 [n, horizon, C, H, W]

    @property
    def n(self) -> int:
        return self.pred.shape[0]

    def scored(self, k: int) -> int:
        """How many of this chunk's lead-k predictions have ground truth (k = 1 … horizon)."""
        return max(0, min(self.n, self.frames.shape[0] - k))


def stream_predict(
    model: torch.nn.Module,
    frames: Iterable[np.ndarray],
    horizon: int = 1,
    chunk: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    reset: bool = False,
) -> Iterator[StreamChunk]:
    """Stream frames through the model chunk by chunk with its state carried.

    Holds at most chunk + horizon decoded frames: a chunk is run once the `horizon` frames after it
    are decoded (so all its predictions that have a truth can be scored), then dropped.

    Args:
        model: an `EncoderForecaster` (eval mode).
        frames: uint8 [C, H, W] frames in order (e.g. `iter_frames(...)`); any iterable.
        horizon: frames forecast from every frame.
        chunk: input frames per model call (results do not depend on it).
        device, precision: where and how the model runs ("bf16" or "fp32").
        compile: run full chunks through torch.compile. For long or live streams at small chunks:
            at chunk 1 on a 2-core CPU (bf16, default model) a frame takes ~3.5 ms instead of
            3.7-4.9 ms, after ~7 s of compilation on the first two chunks (the first starts from a
            zero state, so it is a graph of its own). The clip's last, shorter chunk runs eagerly
            rather than compile a third graph. Off by default: `predict`'s 64-frame chunks gain
            ~1.5× but compile for ~2 min, which only a clip of ~100,000 frames pays back.
        reset: start every chunk from a zero state instead (`convlstm eval`'s "reset" mode: the
            state lives for one chunk, as in stateless training).

    Yields:
        `StreamChunk`s covering every input frame exactly once, in order.
    """
    device = torch.device(device)
    state, start, buf = None, 0, []
    # dynamic=False: a graph per shape; the chunk length is fixed, so there are two (see compile).
    compiled = torch.compile(model.predict_each_step, dynamic=False) if compile else None

    def run(n: int) -> StreamChunk:
        nonlocal state
        window = buf[: n + horizon]
        x = frames_to_unit(window, device)
        step = compiled if compiled is not None and n == chunk else model.predict_each_step
        with torch.inference_mode(), autocast(device, precision):
            pred, state = step(x[None, :n], None if reset else state, horizon)
        return StreamChunk(start, np.stack(window), x, pred[0].float())

    for frame in frames:
        buf.append(frame)
        if len(buf) == chunk + horizon:
            yield run(chunk)
            start, buf = start + chunk, buf[chunk:]
    while buf:
        n = min(chunk, len(buf))
        yield run(n)
        start, buf = start + n, buf[n:]


def encode_context(model, frames: Iterator[np.ndarray], context: int, chunk: int, device, precision):
    """Run the encoder over the first `context` frames in chunks; (state, last frame uint8, count)."""
    device = torch.device(device)
    state, last, seen, buf = None, None, 0, []

    def flush():
        nonlocal state
        x = frames_to_unit(buf, device)[None]
        with torch.inference_mode(), autocast(device, precision):
            state, _ = model.encode(x, state)
        buf.clear()

    for frame in frames:
        buf.append(frame)
        last, seen = frame, seen + 1
        if len(buf) == chunk or seen == context:
            flush()
        if seen == context:
            break
    return state, last, seen


def window_predict(
    model: torch.nn.Module,
    frames: Iterable[np.ndarray],
    window: int,
    horizon: int = 1,
    chunk: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> Iterator[StreamChunk]:
    """The stateless alternative to `stream_predict`: a sliding window of `window` frames.

    For every frame t the model starts from a zero state, reads frames max(0, t−W+1) … t and forecasts
    t+1 … t+horizon, so it can only know what happened in the last W frames. The windows of a chunk
    run as one batch. Yields the same `StreamChunk`s as `stream_predict` (same frames, same order).
    """
    device = torch.device(device)
    hist: list[np.ndarray] = []  # the W−1 frames before the chunk
    buf: list[np.ndarray] = []
    start = 0

    def run(n: int) -> StreamChunk:
        x = frames_to_unit(hist + buf[: n + horizon], device)
        h, preds = len(hist), []
        with torch.inference_mode(), autocast(device, precision):
            for i in range(n):  # at a clip's start a window is shorter: it holds what there is
                if h + i - window + 1 < 0:
                    preds.append(model(x[None, : h + i + 1], None, horizon)[0][0])
            full = [h + i - window + 1 for i in range(n) if h + i - window + 1 >= 0]
            if full:
                wins = x.unfold(0, window, 1).permute(0, 4, 1, 2, 3)[full[0] : full[-1] + 1]  # [N, W, C, H, W]
                preds += list(torch.cat([model(b, None, horizon)[0] for b in wins.split(16)]))
        pred = torch.stack(preds).float()
        return StreamChunk(start, np.stack(buf[: n + horizon]), x[h:], pred)

    def advance(n: int) -> None:
        nonlocal hist, buf, start
        hist = (hist + buf[:n])[-(window - 1):] if window > 1 else []
        buf, start = buf[n:], start + n

    for frame in frames:
        buf.append(frame)
        if len(buf) == chunk + horizon:
            yield run(chunk)
            advance(chunk)
    while buf:
        n = min(chunk, len(buf))
        yield run(n)
        advance(n)
