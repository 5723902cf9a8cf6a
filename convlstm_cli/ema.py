"""An exponential moving average of a model's weights (as timm's ModelEmaV2 keeps one).

After every optimizer step ``ema ← d·ema + (1 − d)·weights``, with a decay d that starts small and
grows to `decay` (d_t = min(decay, (1 + t) / (10 + t))), so the average follows the fast early
changes and then smooths the noise of late training. Validation, best.pt, `predict` and `eval` use
the average; the raw weights keep training (and are what a resumed run continues from).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """The averaged copy of `model` (on the same device, not trained, in eval mode)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights (buffers are copied)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1 - d)
        for b, src in zip(self.model.buffers(), model.buffers()):
            b.copy_(src)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd["model"])
        self.updates = int(sd["updates"])
