"""A deliberately naive ConvLSTM: the textbook formulation, kept for tests and as bench's baseline.

Every step concatenates x_t and h along channels and runs one convolution over the concatenation,
in float32 and NCHW, with no fusion or autocast — the way most public ConvLSTM code is written. It
shares the parameter layout of `ConvLSTM` (conv_x, conv_h, peephole), so weights copy across and
`to_reference(model)` turns any model into its naive twin.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlstm_cli.model.convlstm import ConvLSTM, State


class ReferenceConvLSTM(ConvLSTM):
    """`ConvLSTM` with the per-step conv(concat(x, h)) forward."""

    def naive_step(self, x: Tensor | None, state: State) -> State:
        h, c = self.advect(state) if self.conv_flow is not None else state  # the same warp (tested apart)
        if x is None:
            gates = F.conv2d(h, self.conv_h.weight, self.conv_h.bias, padding=self.kernel_size // 2)
        else:
            w = torch.cat([self.conv_x.weight, self.conv_h.weight], dim=1)
            gates = F.conv2d(torch.cat([x, h], dim=1), w, self.conv_x.bias, padding=self.kernel_size // 2)
        i, f, g, o = gates.chunk(4, dim=1)
        p = self.peephole
        if p is not None:
            i, f = i + p[0] * c, f + p[1] * c
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if p is not None:
            o = o + p[2] * c
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, x: Tensor | None, state: State | None = None, steps: int | None = None):
        if x is None:
            assert state is not None and steps is not None, "input-free layer needs state and steps"
            frames = [None] * steps
        else:
            self.check_input(x)
            frames = list(x.unbind(1))
            if state is None:
                state = self.zero_state(x, x.shape[-2], x.shape[-1])
        outs = []
        for xt in frames:
            state = self.naive_step(xt, state)
            outs.append(state[0])
        return torch.stack(outs, dim=1), state


def to_reference(model: nn.Module) -> nn.Module:
    """A deep copy of `model` (fp32, NCHW) whose ConvLSTM layers all use the naive forward."""
    ref = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format)
    for m in ref.modules():
        if type(m) is ConvLSTM:
            m.__class__ = ReferenceConvLSTM
    return ref
