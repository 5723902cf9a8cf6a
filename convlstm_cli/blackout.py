"""Observation dropout (`train.blackout`): hide the rest of some lanes' input frames, never the targets.

A model that sees every frame can predict the next one from the last few; nothing asks its state to
carry what it no longer sees, and a ball behind an occluder is a few returning pixels of one frame in
fifteen, which the loss barely sees (README, Memory). Hiding the input from a random frame of a
training step's window on (its chunks in a row: with `train.detach_every` > 1 a hidden span crosses
from one chunk into the next, within the gradient's reach), in a share of the lanes, asks it of
every moving object of every video: the dense loss still scores each one-step prediction against
the true frame, so the model has to roll what it saw forward in its state. This is the observation
dropout of Freeman, Metz & Ha (2019, "Learning to predict without looking ahead"). What stands in
for the hidden pixels (``fill``):

- ``freeze`` (default): the last frame the lane showed, as if the camera (or, with a band, that
  part of it) froze. The model predicts the change from its last input frame
  (`model.skip_last_frame`), so a frozen input leaves it a sane start, copy-last of what it saw,
  and the targets still move: what moves on is the state's to carry.
- ``noise``: uniform in [0, 1] per pixel and frame, like nothing a camera shows. With
  `skip_last_frame` the model must then cancel the noise it is given, pixel by pixel (measured:
  it cost 1–3 dB everywhere, README Memory).
- ``black``: zero, a lost signal or (with a band) an occluder that is not in the targets. Unlike the
  frozen frame it shows neither where a hidden object was nor that it is there: the state has to
  carry both, and the targets show it moving on behind the band for up to a window (measured: it
  cost 3–6 dB everywhere and taught no carrying, README Memory).

With ``region="band"`` only a vertical band of random place and width (a fifth to a half of the
frame) is hidden, an occluder whose targets still show what is behind it.

The draw depends only on (seed, rank, step): a resumed run hides the same frames, with no state to
save.
"""

from __future__ import annotations

import torch
from torch import Tensor

REGIONS = ("frame", "band")
FILLS = ("freeze", "noise", "black")
FIRST_HIDDEN = 2  # a window's first two frames stay in view: even a stateless model knows where things go


def blackout_mask(shape: torch.Size, rate: float, region: str, generator: torch.Generator,
                  exempt: Tensor | None = None) -> Tensor:
    """Bool [B, T, 1, H, W]: True where an input pixel is hidden.

    In each lane, with probability `rate`, frames from a random one in [FIRST_HIDDEN, T) to the
    window's end are hidden: whole, or (band) in a vertical band drawn per lane. Lanes where
    `exempt` [B] is True hide nothing (the draw is the same).
    """
    b, t, _, h, w = shape
    lanes = torch.rand(b, generator=generator) < rate
    if exempt is not None:
        lanes &= ~exempt.cpu()
    first = torch.randint(FIRST_HIDDEN, max(t, FIRST_HIDDEN + 1), (b,), generator=generator)
    frames = lanes[:, None] & (torch.arange(t)[None] >= first[:, None])  # [B, T]
    cols = torch.ones(b, w, dtype=torch.bool)
    if region == "band":
        width = (torch.rand(b, generator=generator) * 0.3 + 0.2) * w
        x0 = torch.rand(b, generator=generator) * (w - width)
        x = torch.arange(w)[None] + 0.5
        cols = (x >= x0[:, None]) & (x < (x0 + width)[:, None])  # [B, W]
    return frames[:, :, None, None, None] & cols[:, None, None, None, :].expand(b, 1, 1, h, w)


def key_seed(key: tuple[int, ...]) -> int:
    """A generator seed from a key of ints: the same key, the same draw (a resumed run's)."""
    out = 0
    for k in key:
        out = (out * 1_000_003 + k) % 2**62
    return out


def blackout(inputs: Tensor, rate: float, region: str, key: tuple[int, ...], fill: str = "freeze",
             exempt: Tensor | None = None) -> Tensor:
    """`inputs` [B, T, C, H, W] in [0, 1] with hidden pixels filled as `fill` says (see the module).

    key: what the draw depends on, e.g. (seed, rank, step).
    exempt: bool [B], lanes to leave in view (e.g. those that switch video within `inputs`).
    """
    if rate <= 0:
        return inputs
    g = torch.Generator().manual_seed(key_seed(key))
    mask = blackout_mask(inputs.shape, rate, region, g, exempt)
    if fill == "noise":
        stand_in = torch.rand(inputs.shape, generator=g).to(inputs.device, inputs.dtype)
    elif fill == "black":
        stand_in = inputs.new_zeros(())
    else:  # the lane's last shown frame: hidden frames are a suffix, so it is frame (shown − 1)
        last = mask.flatten(2).any(-1).logical_not().sum(1) - 1  # [B]
        stand_in = inputs[torch.arange(len(last)), last.to(inputs.device)][:, None]
    return torch.where(mask.to(inputs.device), stand_in, inputs)
