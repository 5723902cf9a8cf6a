"""Training losses of `convlstm train` (`train.loss`, `train.hard_pixels`).

PSNR scores the mean squared error, so MSE is the default. The others are there because they were
measured (README, Quality and Memory): Charbonnier, a smooth L1 that favours sparse residuals, and a
hard-pixel term that adds the mean absolute error of each frame's worst pixels: a ball coming out
from behind an occluder is a few pixels of one frame in fifteen, which a mean over all pixels
barely sees (it moved those frames by 0.1–0.3 dB, README Memory; off by default).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

CHARBONNIER_EPS = 1e-3
LOSSES = ("mse", "l1", "charbonnier")


def charbonnier(pred: Tensor, target: Tensor) -> Tensor:
    """mean(√((p − t)² + ε²)) − ε: a smooth L1, with no kink at zero."""
    return ((pred - target).square() + CHARBONNIER_EPS**2).sqrt().mean() - CHARBONNIER_EPS


def hardest(pred: Tensor, target: Tensor, share: float) -> Tensor:
    """Mean absolute error of the `share` of each frame's pixels where it is largest.

    pred, target: [B, T, C, H, W]; a frame is one [C, H, W] (at least one pixel per frame counts).
    """
    err = (pred - target).abs().flatten(2)
    k = max(1, int(share * err.shape[-1]))
    return err.topk(k, dim=-1).values.mean()


def make_loss(kind: str = "mse", hard_pixels: float = 0.0, hard_weight: float = 0.1) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss of a float32 prediction against its targets, as the config names it.

    Args:
        kind: mse | l1 | charbonnier.
        hard_pixels: share of each frame's pixels in the hard-pixel term (0: no term).
        hard_weight: weight of that term against the main loss.
    """
    base = {"mse": F.mse_loss, "l1": F.l1_loss, "charbonnier": charbonnier}[kind]
    if not hard_pixels:
        return base
    return lambda pred, target: base(pred, target) + hard_weight * hardest(pred, target, hard_pixels)
