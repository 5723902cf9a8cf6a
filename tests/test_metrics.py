"""Metrics against independent float64 numpy computations (and closed forms where they exist)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convlstm_cli.metrics import MetricAccumulator, change_drawn, frame_metrics, mae, mse, psnr, ssim


def ssim_reference(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. 2004 written out directly: per window, weighted means and *central* moments.

    x, y: float64 [C, H, W] in [0, 1]. Valid window positions only; mean over positions and channels.
    """
    g = np.exp(-((np.arange(win) - (win - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01**2, 0.03**2
    per_channel = []
    for xc, yc in zip(x, y, strict=True):
        px = np.lib.stride_tricks.sliding_window_view(xc, (win, win))  # [H-win+1, W-win+1, win, win]
        py = np.lib.stride_tricks.sliding_window_view(yc, (win, win))
        mx = (px * w).sum(axis=(-2, -1))
        my = (py * w).sum(axis=(-2, -1))
        dx, dy = px - mx[..., None, None], py - my[..., None, None]
        vx = (w * dx * dx).sum(axis=(-2, -1))
        vy = (w * dy * dy).sum(axis=(-2, -1))
        cxy = (w * dx * dy).sum(axis=(-2, -1))
        smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        per_channel.append(smap.mean())
    return float(np.mean(per_channel))


def _pair(shape, seed=0):
    """A textured frame and a noisy, shifted, brightened copy (SSIM well below 1)."""
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    for _ in range(3):  # spatial correlation, like natural images
        a = (a + np.roll(a, 1, -1) + np.roll(a, 1, -2)) / 3
    b = np.clip(0.8 * np.roll(a, 1, -1) + 0.1 + 0.03 * rng.standard_normal(shape), 0, 1)
    return a, b


@pytest.mark.parametrize("shape", [(3, 1, 32, 32), (2, 3, 24, 40)])
def test_ssim_matches_direct_formula(shape):
    a, b = _pair(shape)
    got = ssim(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    want = [ssim_reference(a[t], b[t]) for t in range(shape[0])]
    assert got.shape == (shape[0],) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, atol=2e-5)
    assert all(0.05 < v < 0.95 for v in want)  # a meaningful, non-trivial regime
    got64 = ssim(torch.tensor(a), torch.tensor(b))
    np.testing.assert_allclose(got64.numpy(), want, rtol=1e-10, atol=1e-12)


def test_ssim_small_frames_use_largest_odd_window():
    a, b = _pair((2, 1, 8, 9), seed=3)
    got = ssim(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(got, [ssim_reference(a[t], b[t], win=7) for t in range(2)], rtol=1e-10)


def test_ssim_leading_dims_and_closed_forms():
    a, b = _pair((2, 3, 1, 16, 16), seed=1)
    batched = ssim(torch.tensor(a), torch.tensor(b))
    assert batched.shape == (2, 3)
    flat = ssim(torch.tensor(a.reshape(6, 1, 16, 16)), torch.tensor(b.reshape(6, 1, 16, 16)))
    torch.testing.assert_close(batched.flatten(), flat)
    x = torch.tensor(a[0])
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64))
    # Constant frames: variances vanish, SSIM = (2pq + C1) / (p² + q² + C1).
    p, q, c1 = 0.3, 0.7, 0.01**2
    got = ssim(torch.full((1, 1, 16, 16), p, dtype=torch.float64), torch.full((1, 1, 16, 16), q, dtype=torch.float64))
    assert got.item() == pytest.approx((2 * p * q + c1) / (p * p + q * q + c1), rel=1e-12)


def test_mse_mae_psnr_match_numpy():
    a, b = _pair((4, 3, 16, 20), seed=2)
    ta, tb = torch.tensor(a), torch.tensor(b)
    want_mse = ((a - b) ** 2).reshape(4, -1).mean(1)
    np.testing.assert_allclose(mse(ta, tb).numpy(), want_mse, rtol=1e-12)
    np.testing.assert_allclose(mae(ta, tb).numpy(), np.abs(a - b).reshape(4, -1).mean(1), rtol=1e-12)
    np.testing.assert_allclose(psnr(ta, tb).numpy(), 10 * np.log10(1 / want_mse), rtol=1e-12)
    # A uniform offset of 0.1: MSE 0.01, MAE 0.1, PSNR exactly 20 dB.
    x = torch.full((2, 1, 8, 8), 0.25, dtype=torch.float64)
    m = frame_metrics(x + 0.1, x)
    torch.testing.assert_close(m["psnr"], torch.full((2,), 20.0, dtype=torch.float64))
    torch.testing.assert_close(m["mae"], torch.full((2,), 0.1, dtype=torch.float64))
    assert psnr(x, x).tolist() == [100.0, 100.0]  # identical frames: capped, finite


def test_low_precision_inputs_are_scored_in_float32():
    a, b = _pair((2, 1, 16, 16), seed=4)
    m = frame_metrics(torch.tensor(a, dtype=torch.bfloat16), torch.tensor(b, dtype=torch.bfloat16))
    assert all(v.dtype == torch.float32 for v in m.values())


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        mse(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8))


def test_accumulator_means_and_state_dict():
    acc = MetricAccumulator()
    a, b = _pair((5, 1, 16, 16), seed=5)
    ta, tb = torch.tensor(a), torch.tensor(b)
    acc.update(ta[:2], tb[:2])
    acc.update(ta[2:], tb[2:])
    direct = frame_metrics(ta, tb)
    assert len(acc) == 5
    for k, v in acc.per_frame().items():
        np.testing.assert_allclose(v, direct[k].numpy(), rtol=1e-12)
        assert acc.means()[k] == pytest.approx(float(direct[k].mean()), rel=1e-12)
    again = MetricAccumulator()
    again.load_state_dict(acc.state_dict())
    assert again.means() == acc.means()
    assert math.isnan(MetricAccumulator().means()["psnr"])


def test_change_drawn_is_the_share_of_the_true_change_on_the_mask():
    g = torch.Generator().manual_seed(0)
    last, truth = torch.rand(1, 6, 6, generator=g), torch.rand(1, 6, 6, generator=g)
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1:3, 2:5] = True
    d = (truth - last)[mask]
    for share in (0.0, 0.5, 1.0, -0.25):
        anything = torch.rand(1, 6, 6, generator=g)  # off the mask the prediction does not count
        pred = torch.where(mask, last + share * (truth - last), anything)
        num, den = change_drawn(pred, last, truth, mask)
        assert den == pytest.approx(float((d * d).sum()))
        assert num / den == pytest.approx(share, abs=1e-6)
