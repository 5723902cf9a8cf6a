"""Observation dropout (`train.blackout`): which input pixels are hidden, and how."""

from __future__ import annotations

import pytest
import torch

from convlstm_cli.blackout import FIRST_HIDDEN, blackout, blackout_mask, key_seed


def draw(rate: float, region: str, lanes: int = 64, t: int = 8, h: int = 16, w: int = 40) -> torch.Tensor:
    return blackout_mask(torch.Size([lanes, t, 1, h, w]), rate, region, torch.Generator().manual_seed(3))


@pytest.mark.parametrize("region", ["frame", "band"])
def test_a_lane_hides_the_rest_of_its_chunk_from_one_frame_on(region):
    m = draw(0.5, region)
    frames = m.flatten(2).any(-1)  # [B, T]
    hit = frames.any(1)
    assert 20 < int(hit.sum()) < 44  # about half of 64 lanes (a fixed draw)
    assert not frames[:, :FIRST_HIDDEN].any()
    assert frames[hit, -1].all()  # from the first hidden frame to the chunk's end
    assert (frames.int().diff(dim=1) >= 0).all()
    firsts = {int(frames[b].int().argmax()) for b in range(len(frames)) if hit[b]}
    assert len(firsts) >= 4  # the first hidden frame varies


def test_frame_region_hides_whole_frames():
    m = draw(0.5, "frame")
    per_frame = m.flatten(2).float().mean(-1)
    assert set(per_frame.unique().tolist()) <= {0.0, 1.0}


def test_band_region_hides_one_vertical_band_per_lane():
    m = draw(1.0, "band")
    w = m.shape[-1]
    for lane in m[:, -1, 0]:  # [H, W] of each lane's last frame
        assert (lane == lane[0]).all()  # every row alike: a vertical band
        cols = lane[0].nonzero().flatten()
        assert len(cols) == int(cols[-1] - cols[0]) + 1  # contiguous
        assert 0.2 * w - 1 <= len(cols) <= 0.5 * w + 1


def test_rate_zero_and_one():
    assert not draw(0.0, "frame").any()
    assert draw(1.0, "frame").flatten(2).any(-1).any(1).all()


def test_hidden_pixels_are_noise_and_the_draw_depends_only_on_its_key():
    x = torch.zeros(16, 8, 1, 12, 12)
    a = blackout(x, 0.5, "frame", (0, 0, 7, 0), "noise")
    hidden = a != 0
    assert 0.4 < float(a[hidden].mean()) < 0.6 and float(a[hidden].std()) > 0.25  # uniform in [0, 1]
    assert hidden.any() and not hidden.all()
    assert torch.equal(a, blackout(x, 0.5, "frame", (0, 0, 7, 0), "noise"))  # a resumed run hides the same
    assert not torch.equal(a, blackout(x, 0.5, "frame", (0, 0, 8, 0), "noise"))
    assert not torch.equal(a, blackout(x, 0.5, "frame", (0, 1, 7, 0), "noise"))  # another rank, another draw
    assert blackout(x, 0.0, "frame", (0, 0, 7, 0)) is x


def test_freeze_fills_with_the_lane_s_last_shown_frame():
    # Frame t of lane b holds the value 100·b + t: every pixel says which frame it came from.
    b, t = 16, 8
    x = (100 * torch.arange(b)[:, None] + torch.arange(t)[None]).float()[:, :, None, None, None].expand(b, t, 1, 4, 6)
    for region in ("frame", "band"):
        y = blackout(x, 0.5, region, (1, 0, 3, 0))
        m = blackout_mask(x.shape, 0.5, region, torch.Generator().manual_seed(key_seed((1, 0, 3, 0))))
        assert m.any() and torch.equal(y[~m], x[~m])
        for lane in range(b):
            hidden = m[lane].flatten(1).any(-1)
            if hidden.any():
                last = int(hidden.int().argmax()) - 1  # the frame before the first hidden one
                assert (y[lane][m[lane]] == 100 * lane + last).all()


def test_black_fills_hidden_pixels_with_zero_and_keeps_the_rest():
    x = torch.rand(16, 8, 1, 6, 10) * 0.9 + 0.1  # no pixel is zero before
    for region in ("frame", "band"):
        y = blackout(x, 0.5, region, (2, 0, 5, 0), "black")
        m = blackout_mask(x.shape, 0.5, region, torch.Generator().manual_seed(key_seed((2, 0, 5, 0))))
        assert m.any() and not m.all()
        assert torch.equal(y == 0, m)
        assert torch.equal(y[~m], x[~m])
