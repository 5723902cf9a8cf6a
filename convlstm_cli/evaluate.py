"""Stateful validation: one-step-ahead prediction over whole videos, beside the copy-last baseline.

Each validation video plays once in a lane (`ClipStreamer(loop=False)`), chunk after chunk, with the
encoder state carried. For every frame t of a chunk the model predicts frame t+1 from the state after
frame t (`predict_each_step`), so every frame but a video's first (and the tail shorter than a window)
is predicted exactly once. The baseline predicts frame t+1 as frame t.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from convlstm_cli.device import autocast, to_unit
from convlstm_cli.model.state import StreamState


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    videos: Sequence,
    cfg,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, float]:
    """Stream `videos` through `model` and average one-step-ahead metrics over all predicted frames.

    Args:
        model: an EncoderForecaster (not DDP-wrapped).
        videos: VideoInfo records (or paths) to play once each.
        cfg: the RunConfig (data settings: size, channels, context, stride, batch size, workers).
        device, precision: where and how to run the model.

    Returns:
        `val_mse`, `val_mae`, `val_psnr`, `val_ssim` for the model, `baseline_*` for copy-last, and
        `val_frames`, the number of predicted frames.
    """
    from convlstm_cli.data.streamer import ClipStreamer
    from convlstm_cli.metrics import MetricAccumulator

    d = cfg.data
    streamer = ClipStreamer(
        list(videos), batch_size=max(1, min(d.batch_size, len(videos))), context=d.context, horizon=1,
        size=d.hw(), channels=d.channels, stride=d.stride, shuffle=False, loop=False,
        workers=d.workers, prefetch=d.prefetch, pin_memory=device.type == "cuda", resize=d.resize,
    )
    was_training = model.training
    model.eval()
    scores, baseline, state = MetricAccumulator(), MetricAccumulator(), StreamState()
    try:
        for batch in streamer:
            batch = batch.to(device)
            inputs, targets = to_unit(batch.inputs, device), to_unit(batch.targets, device)
            state = state.reset(batch.reset)
            with autocast(device, precision):
                pred, state = model.predict_each_step(inputs, state, horizon=1)
            truth = torch.cat([inputs[:, 1:], targets[:, :1]], dim=1)
            keep = batch.valid
            scores.update(pred[:, :, 0][keep].float(), truth[keep])
            baseline.update(inputs[keep], truth[keep])  # copy-last: frame t stands for frame t+1
    finally:
        streamer.close()
        model.train(was_training)
    return {
        **{f"val_{k}": v for k, v in scores.means().items()},
        **{f"baseline_{k}": v for k, v in baseline.means().items()},
        "val_frames": len(scores),
    }
