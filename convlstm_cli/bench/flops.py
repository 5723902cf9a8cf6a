"""The model's FLOP count, from the convolutions it actually runs (2 FLOPs per multiply-add).

A ConvLSTM layer step costs 2·k²·(C_in + C_h)·4·C_h·H·W: its input and hidden convolutions. Rather
than re-deriving that for every architecture, `count_flops` runs the model once on the real input
shapes with hooks on every `Conv2d` / `ConvTranspose2d` and adds up what they compute, so the stem,
the down/up-sampling and the head are counted too. Pointwise gate math is left out (< 1 %).

'Same' padding is counted as computed (the usual convention for MFU): a 5×5 kernel at 16×16 has
14 % of its taps in the zero border, which oneDNN skips, so MFU against a dense peak can exceed 1
there; `valid_tap_fraction` gives the share of taps that touch real pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def conv_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Forward FLOPs of one Conv2d / ConvTranspose2d call."""
    k = module.kernel_size[0] * module.kernel_size[1]
    cin, cout, g = module.in_channels, module.out_channels, module.groups
    if isinstance(module, nn.ConvTranspose2d):
        return 2 * k * (cin // g) * cout * inp.shape[0] * inp.shape[-2] * inp.shape[-1]
    return 2 * k * (cin // g) * cout * out.shape[0] * out.shape[-2] * out.shape[-1]


def count_flops(run: Callable[[], object], model: nn.Module) -> int:
    """Forward FLOPs of `run()` (which calls `model`), summed over its convolutions."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += conv_flops(module, inputs[0], output)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


def valid_tap_fraction(kernel: int, height: int, width: int) -> float:
    """Share of a 'same'-padded k×k convolution's multiply-adds that read real (non-padding) pixels."""

    def along(n: int) -> float:
        pad = kernel // 2
        valid = sum(min(n - 1, i + pad) - max(0, i - pad) + 1 for i in range(n))
        return valid / (kernel * n)

    return along(height) * along(width)
