"""Per-frame image metrics for predicted frames in [0, 1]: MSE, MAE, PSNR and SSIM.

Every function takes `pred` and `truth` of the same shape [..., C, H, W] (e.g. [T, C, H, W] or
[B, T, C, H, W]) and returns one value per frame, shape [...]. Conventions:

- MSE and MAE are per-pixel means over C·H·W (not sums).
- PSNR = 10·log10(1 / MSE) per frame, for a data range of 1. Identical frames would give +inf, which
  neither averages nor fits in JSON, so MSE is floored at 1e-10: PSNR is capped at 100 dB.
- SSIM follows Wang et al. 2004: an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, data range
  1, statistics over 'valid' window positions only (no padding), averaged over positions and channels.
  Frames smaller than 11 pixels use the largest odd window that fits (same σ).

Means over frames are means of the per-frame values (so mean PSNR is the mean of per-frame PSNRs).
"""

from __future__ import annotations

import math
from array import array

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = ("mse", "mae", "psnr", "ssim")
MSE_FLOOR = 1e-10  # caps PSNR at 100 dB for identical frames
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _check(pred: Tensor, truth: Tensor) -> None:
    if pred.shape != truth.shape:
        raise ValueError(f"metrics need pred and truth of one shape, got {list(pred.shape)} and {list(truth.shape)}")
    if pred.dim() < 3:
        raise ValueError(f"metrics expected frames [..., C, H, W], got {list(pred.shape)}")


def _float(x: Tensor) -> Tensor:
    # bf16 predictions are compared in float32: bf16 has ~3 significant digits, too few for MSE.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def mse(pred: Tensor, truth: Tensor) -> Tensor:
    """Mean squared error per frame: [..., C, H, W] → [...]."""
    _check(pred, truth)
    return (_float(pred) - _float(truth)).square().mean(dim=(-3, -2, -1))


def mae(pred: Tensor, truth: Tensor) -> Tensor:
    """Mean absolute error per frame: [..., C, H, W] → [...]."""
    _check(pred, truth)
    return (_float(pred) - _float(truth)).abs().mean(dim=(-3, -2, -1))


def psnr_from_mse(m: Tensor) -> Tensor:
    """PSNR in dB for data range 1 from per-frame MSE (floored at 1e-10, i.e. at most 100 dB)."""
    return -10.0 * torch.log10(m.clamp_min(MSE_FLOOR))


def psnr(pred: Tensor, truth: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per frame in dB (data range 1): [..., C, H, W] → [...]."""
    return psnr_from_mse(mse(pred, truth))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float64) -> Tensor:
    """The normalised 1-D Gaussian of `size` taps; its outer product is the 2-D SSIM window."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _window_size(h: int, w: int) -> int:
    size = min(SSIM_WINDOW, h, w)
    return size if size % 2 else size - 1


def ssim(pred: Tensor, truth: Tensor) -> Tensor:
    """Structural similarity per frame (mean SSIM map over valid positions and channels).

    Args:
        pred, truth: [..., C, H, W] in [0, 1].

    Returns:
        [...] SSIM per frame, float32 (float64 for float64 inputs).
    """
    _check(pred, truth)
    lead, (c, h, w) = pred.shape[:-3], pred.shape[-3:]
    x = _float(pred).reshape(-1, 1, h, w)
    y = _float(truth).reshape(-1, 1, h, w)
    size = _window_size(h, w)
    g = gaussian_window(size, dtype=x.dtype).to(x.device)
    gh, gw = g.view(1, 1, size, 1), g.view(1, 1, 1, size)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian, 'valid' positions only
        return F.conv2d(F.conv2d(t, gh), gw)

    # One batched blur of the five moments instead of five calls.
    n = x.shape[0]
    moments = blur(torch.cat([x, y, x * x, y * y, x * y]))
    mx, my, mxx, myy, mxy = moments.split(n)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return smap.mean(dim=(-3, -2, -1)).reshape(*lead, c).mean(-1)


def frame_metrics(pred: Tensor, truth: Tensor) -> dict[str, Tensor]:
    """All four metrics per frame.

    Args:
        pred, truth: [..., C, H, W] in [0, 1] (any float dtype; computed in at least float32).

    Returns:
        {"mse", "mae", "psnr", "ssim"} → tensors of shape [...] (one value per frame).
    """
    m = mse(pred, truth)
    return {"mse": m, "mae": mae(pred, truth), "psnr": psnr_from_mse(m), "ssim": ssim(pred, truth)}


def change_drawn(pred: Tensor, last: Tensor, truth: Tensor, mask: Tensor) -> tuple[float, float]:
    """How much of the true change from `last` to `truth` the prediction draws, on `mask` only.

    Returns Σ (pred − last)·(truth − last) and Σ (truth − last)² over the masked pixels: their ratio
    is 1 when the prediction draws all of the change, 0 for copy-last, negative the wrong way. Sums,
    not the ratio, so that frames and clips add up. PSNR over a whole frame hides a few pixels (a
    ball coming back from behind an occluder); this looks at them alone.
    """
    dp, dt = (_float(pred) - _float(last))[mask], (_float(truth) - _float(last))[mask]
    return float((dp * dt).sum()), float((dt * dt).sum())


class MetricAccumulator:
    """Per-frame metric values gathered over a stream, in compact float64 arrays (8 bytes a value).

    `update` takes frames of any leading shape and appends one value per frame, in order. Means are
    means over frames. Holds O(frames) floats and nothing else, so a stream of any length fits.
    """

    def __init__(self) -> None:
        self.values: dict[str, array] = {k: array("d") for k in METRICS}

    def update(self, pred: Tensor, truth: Tensor) -> dict[str, Tensor]:
        """Score frames [..., C, H, W]; returns the per-frame metrics (flattened to [N])."""
        out = {k: v.detach().flatten() for k, v in frame_metrics(pred, truth).items()}
        for k, v in out.items():
            self.values[k].extend(v.double().cpu().tolist())
        return out

    def add(self, values: dict[str, float]) -> None:
        """Append one frame's already computed values."""
        for k in METRICS:
            self.values[k].append(float(values[k]))

    def __len__(self) -> int:
        return len(self.values["mse"])

    def means(self) -> dict[str, float]:
        """Mean of each metric over the frames seen (NaN when there are none)."""
        n = len(self)
        return {k: (math.fsum(v) / n if n else math.nan) for k, v in self.values.items()}

    def per_frame(self) -> dict[str, list[float]]:
        return {k: v.tolist() for k, v in self.values.items()}

    def state_dict(self) -> dict[str, list[float]]:
        return self.per_frame()

    def load_state_dict(self, sd: dict[str, list[float]]) -> None:
        self.values = {k: array("d", sd[k]) for k in METRICS}
