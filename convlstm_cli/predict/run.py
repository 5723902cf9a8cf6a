"""`convlstm predict`: what a trained model expects next, on a clip of any length, beside the truth.

Two modes, both in constant memory (the clip is decoded and scored in chunks, the state carried):

- stream (default): for every frame t the model predicts t+1 … t+horizon (`predict_each_step`).
  Frame t+1's prediction is scored against the truth and shown in the video; lead times 2…horizon
  are scored too (`by_step`).
- forecast (`context=N`): observe frames 0…N−1, forecast frames N…N+K−1 from the state after frame
  N−1. Forecast frames past the clip's end have no ground truth and are not scored.

Every score has the copy-last-frame baseline beside it (the last observed frame as the prediction).
Outputs go through `PredictionOutputs` (temporary names, renamed together at the end).
The settings of a run are a `PredictPlan`; its `PredictResult` holds the plan and the scores.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convlstm_cli import jsonsafe
from convlstm_cli.checkpoint import LoadedModel, load_model
from convlstm_cli.device import autocast, fallback_notes, resolve_device, resolve_precision
from convlstm_cli.errors import InputError, VideoError
from convlstm_cli.metrics import MetricAccumulator
from convlstm_cli.predict.outputs import ClipSource, PredictionOutputs, open_clip, to_uint8
from convlstm_cli.predict.streaming import (
    StreamChunk,
    encode_context,
    frames_to_unit,
    stream_predict,
    window_predict,
)

Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class PredictPlan:
    """What a prediction run does: its clip, model and settings (fixed before the first frame)."""

    mode: str  # "stream" or "forecast"
    clip: str
    checkpoint: str
    step: int  # the checkpoint's training step
    size: tuple[int, int]
    channels: int
    fps: float
    horizon: int
    context: int | None  # frames observed before a forecast (forecast mode)
    device: str
    precision: str
    window: int | None = None  # also score a stateless sliding window of this many frames (stream mode)


@dataclass
class PredictResult:
    """What a prediction run found: the plan it followed and the scores (`to_dict()` is metrics.json)."""

    plan: PredictPlan
    frames: int = 0  # frames read from the clip (after stride and max_frames)
    frame_index: list[int] = field(default_factory=list)  # frame scored at each per-frame position
    model: MetricAccumulator = field(default_factory=MetricAccumulator)
    baseline: MetricAccumulator = field(default_factory=MetricAccumulator)
    by_step: list[tuple[MetricAccumulator, MetricAccumulator]] = field(default_factory=list)
    unscored: list[int] = field(default_factory=list)  # forecast frames past the clip's end
    window: MetricAccumulator | None = None  # the same frames predicted by a stateless sliding window
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def precision(self) -> str:
        return self.plan.precision

    def to_dict(self) -> dict:
        p = self.plan
        pixels = p.channels * p.size[0] * p.size[1]

        def block(acc: MetricAccumulator, per_frame: bool = True) -> dict:
            out = dict(acc.means())
            # OpenSTL's convention beside ours: per frame, summed over its C·H·W pixels.
            out.update(mse_sum=out["mse"] * pixels, mae_sum=out["mae"] * pixels)
            if per_frame:
                out["per_frame"] = acc.per_frame()
            return out

        steps = [{"step": k + 1, "frames": len(m), "model": block(m, False), "baseline": block(b, False)}
                 for k, (m, b) in enumerate(self.by_step)]
        return jsonsafe.clean({
            "mode": p.mode, "clip": p.clip, "checkpoint": p.checkpoint, "checkpoint_step": p.step,
            "frames": self.frames, "size": list(p.size), "channels": p.channels, "fps": p.fps,
            "horizon": p.horizon, "context": p.context, "device": p.device,
            "precision": p.precision, "scored_frames": len(self.model), "frame_index": self.frame_index,
            "model": block(self.model), "baseline": block(self.baseline), "by_step": steps,
            "unscored_frames": self.unscored, "notes": self.notes, "outputs": self.outputs,
            "seconds": round(self.seconds, 3),
            **({"window": {"window": p.window, **block(self.window)}} if self.window is not None else {}),
        })


def _score_stream(result: PredictResult, ch: StreamChunk, outputs: PredictionOutputs) -> None:
    base = ch.frames[: ch.n]  # copy-last-frame: frame t predicts every later frame
    horizon = result.plan.horizon
    for k in range(1, horizon + 1):
        nv = ch.scored(k)
        if nv == 0:
            continue
        truth = ch.frames[k : k + nv]
        m, b = result.by_step[k - 1]
        m.update(ch.pred[:nv, k - 1], truth)
        b.update(base[:nv], truth)
        if k == 1:
            result.frame_index += range(ch.start + 1, ch.start + 1 + nv)
            outputs.add_frames(ch.frames_u8[1 : 1 + nv], to_uint8(ch.pred[:nv, 0]))
            outputs.add_predictions(ch.pred[:nv, 0])
    # The forecast strip shows the latest frame whose whole horizon has ground truth (else frame 0).
    full = ch.frames.shape[0] - 1 - horizon
    if full >= 0 or ch.start == 0:
        i = min(max(full, 0), ch.n - 1)
        truth = ch.frames_u8[i + 1 : i + 1 + horizon]
        outputs.set_strip(ch.start + i, truth, to_uint8(ch.pred[i]))


def _run_stream(result, loaded, frames, chunk, device, outputs, progress) -> None:
    p = result.plan
    result.by_step = [(MetricAccumulator(), MetricAccumulator()) for _ in range(p.horizon)]
    for ch in stream_predict(loaded.model, frames, p.horizon, chunk, device, p.precision):
        result.frames = ch.start + ch.n
        _score_stream(result, ch, outputs)
        if progress:
            progress(result.frames, None)
    if result.frames < 2:
        raise VideoError(p.clip, f"too short: {result.frames} frame(s), streaming needs at least 2")
    m, b = result.by_step[0]
    result.model, result.baseline = m, b


def _run_window(result, loaded, frames, chunk, device) -> None:
    """Score the same t+1 frames predicted by a stateless sliding window (`--stateless-window`)."""
    p, acc = result.plan, MetricAccumulator()
    for ch in window_predict(loaded.model, frames, p.window, 1, chunk, device, p.precision):
        nv = ch.scored(1)
        if nv:
            acc.update(ch.pred[:nv, 0], ch.frames[1 : 1 + nv])
    result.window = acc


def _run_forecast(result, loaded, frames, chunk, device, outputs, progress) -> None:
    p = result.plan
    n, k = p.context, p.horizon
    frames = iter(frames)
    state, last, seen = encode_context(loaded.model, frames, n, chunk, device, p.precision)
    if seen < n:
        raise VideoError(p.clip, f"too short: {seen} frame(s), --context {n} needs at least {n}")
    last_t = frames_to_unit([last], device)
    with torch.inference_mode(), autocast(device, p.precision):
        pred = loaded.model.forecast(state, last_t, k)[0].float()  # [K, C, H, W]
    truth_u8 = list(itertools.islice(frames, k))
    result.frames = n + len(truth_u8)
    if progress:
        progress(result.frames, None)
    pred_u8, have = to_uint8(pred), len(truth_u8)
    result.by_step = [(MetricAccumulator(), MetricAccumulator()) for _ in range(have)]
    if have:
        truth = frames_to_unit(truth_u8, device)
        scores = result.model.update(pred[:have], truth)
        bases = result.baseline.update(last_t.expand(have, -1, -1, -1), truth)
        for j, (m, b) in enumerate(result.by_step):
            m.add({key: v[j] for key, v in scores.items()})
            b.add({key: v[j] for key, v in bases.items()})
        result.frame_index = list(range(n, n + have))
    result.unscored = list(range(n + have, n + k))
    if result.unscored:
        result.notes.append(
            f"frames {result.unscored[0]}-{result.unscored[-1]} are past the clip's end "
            f"({n + have} frames): no ground truth, not scored"
        )
    outputs.add_frames(truth_u8 + [None] * (k - have), pred_u8)
    outputs.add_predictions(pred)
    outputs.set_strip(n - 1, truth_u8, pred_u8)


def resolve_model(checkpoint: str | Path | LoadedModel, device: torch.device) -> LoadedModel:
    """A LoadedModel as given (moved to `device`), or loaded from a checkpoint file or run directory."""
    if isinstance(checkpoint, LoadedModel):
        checkpoint.model.to(device).eval()
        return checkpoint
    return load_model(checkpoint, device)


def predict_clip(
    clip: str | Path,
    checkpoint: str | Path | LoadedModel,
    out_dir: str | Path | None = None,
    *,
    context: int | None = None,
    horizon: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    chunk: int = 64,
    max_frames: int | None = None,
    video: bool = True, gif: bool = True, png: bool = True, gif_max_frames: int = 300, error_gain: float = 4.0,
    progress: Progress | None = None,
    stateless_window: int | None = None,
) -> PredictResult:
    """Predict on one clip, score against the truth and the copy-last baseline, write the outputs.

    Args:
        clip: a video, frame folder or array sequence (``data.npy#k``), read as the model was trained.
        checkpoint: a checkpoint file, a run directory (best, else last) or a `LoadedModel`.
        out_dir: where prediction.mp4/.gif, forecast.png and metrics.json go (None: nothing written).
        context, horizon: forecast mode observes `context` frames, then forecasts `horizon` (stream mode
            forecasts `horizon` frames from every frame; default: the model's horizon).
        device: "auto", "cpu" or "cuda". precision: "auto" (bf16 where supported), "bf16", "fp32".
        chunk: frames per model call in stream mode (memory, not results, depends on it).
        max_frames: read at most this many frames of the clip.
        video, gif, png: write prediction.mp4, prediction.gif, forecast.png (the GIF holds the first
            `gif_max_frames` frames; the error panels show |error| × `error_gain`).
        progress: called with (frames read, expected total or None) after each chunk.
        stateless_window: also score the model as a stateless sliding window of this many frames.

    Returns:
        A `PredictResult` (`result.to_dict()` is metrics.json). InputError for a bad clip, checkpoint or
        option: nothing is written then.
    """
    _check_options(context=context, horizon=horizon, chunk=chunk, max_frames=max_frames,
                   stateless_window=stateless_window)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    loaded = resolve_model(checkpoint, dev)
    source = open_clip(clip, loaded.config, max_frames)
    plan = make_plan(clip, loaded, source, context, horizon, dev, precision, stateless_window)
    result = PredictResult(plan, notes=list(source.notes) + fallback_notes(precision, plan.precision, dev))
    outputs = PredictionOutputs(out_dir, source, video=video, gif=gif, png=png, gif_max_frames=gif_max_frames,
                                error_gain=error_gain, pred_label="forecast" if context else "prediction t+1")
    run = _run_forecast if context else _run_stream
    with outputs:
        total = source.expected_frames
        if context and total is not None:
            total = min(total, context + plan.horizon)
        report = (lambda done, _: progress(done, total)) if progress else None
        run(result, loaded, source.frames(), chunk, dev, outputs, report)
        if stateless_window:
            _run_window(result, loaded, source.frames(), chunk, dev)
        result.seconds = time.perf_counter() - t0
        result.outputs = outputs.commit(result)
    return result


def _check_options(**options: int | None) -> None:
    for name, v in options.items():
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    if options["context"] and options["stateless_window"]:
        raise InputError("--stateless-window compares streaming predictions; it does not go with --context")


def make_plan(clip, loaded: LoadedModel, source: ClipSource, context: int | None, horizon: int | None,
              device: torch.device, precision: str, window: int | None = None) -> PredictPlan:
    """The settings of a run on `source`; VideoError if the clip is too short for them."""
    needed = context or 2
    if source.expected_frames is not None and source.expected_frames < needed:
        why = f"--context {context} needs" if context else "streaming needs"
        raise VideoError(clip, f"too short: {source.expected_frames} frame(s), {why} at least {needed}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every full chunk has the same shape: pick kernels once
    return PredictPlan(
        mode="forecast" if context else "stream", clip=str(clip), checkpoint=str(loaded.path), step=loaded.step,
        size=source.size, channels=source.channels, fps=source.fps,
        horizon=horizon or loaded.config.model.horizon, context=context, device=str(device),
        precision=resolve_precision(precision, device), window=window,
    )
