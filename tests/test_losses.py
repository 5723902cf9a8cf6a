"""Training losses against hand computations (NumPy), and the config keys that choose them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convlstm_cli.config import load_config
from convlstm_cli.errors import ConfigError
from convlstm_cli.losses import CHARBONNIER_EPS, hardest, make_loss


def frames(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 1, 8, 8, generator=g), torch.rand(2, 3, 1, 8, 8, generator=g)


def test_hardest_is_the_mean_of_each_frames_worst_pixels():
    pred, target = frames()
    err = np.abs(pred.numpy() - target.numpy()).reshape(6, 64)
    want = np.mean([np.sort(e)[-6:].mean() for e in err])  # 10 % of 64 pixels → 6 per frame
    assert hardest(pred, target, 0.1).item() == pytest.approx(want, rel=1e-6)
    assert hardest(pred, target, 1e-6).item() == pytest.approx(err.max(axis=1).mean(), rel=1e-6)  # at least one


def test_loss_with_hard_pixels_adds_the_weighted_term_and_pulls_only_those_pixels():
    pred, target = frames(1)
    d = pred.numpy() - target.numpy()
    charb = np.mean(np.sqrt(d**2 + CHARBONNIER_EPS**2)) - CHARBONNIER_EPS
    loss = make_loss("charbonnier", hard_pixels=0.1, hard_weight=0.5)
    assert loss(pred, target).item() == pytest.approx(charb + 0.5 * hardest(pred, target, 0.1).item(), rel=1e-6)
    assert make_loss("mse")(pred, target).item() == pytest.approx(np.mean(d**2), rel=1e-6)
    p = pred.clone().requires_grad_()
    (make_loss("mse", 0.1, 1.0)(p, target) - make_loss("mse")(p, target)).backward()  # the hard term alone
    moved = (p.grad != 0).flatten(2).sum(-1)
    assert (moved == 6).all()  # 6 pixels of every frame, no others


def test_hard_pixel_config_is_checked():
    cfg = load_config("quickstart", ["train.hard_pixels=0.01"])
    assert cfg.train.hard_pixels == 0.01 and cfg.train.hard_weight == 0.1
    with pytest.raises(ConfigError, match="train.hard_pixels: a share in"):
        load_config(None, ["train.hard_pixels=2"])
    with pytest.raises(ConfigError, match="train.loss: one of mse, l1, charbonnier"):
        load_config(None, ["train.loss=huber"])
