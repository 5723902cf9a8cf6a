"""A plain stack of ConvLSTM layers sized like OpenSTL's ConvLSTM-S, for benchmarking.

OpenSTL (Tan et al. 2023) benchmarks ConvLSTM on Moving MNIST as four 128-channel layers with 5×5
kernels on 64×64 frames cut into 4×4 patches (space-to-depth: 16 channels at 16×16). A 20-frame
sequence is 10 observed frames then 10 predicted ones, i.e. 19 recurrent steps: each step reads one
frame (observed, then the model's own previous prediction) and predicts the next. That is 56.8 GMAC
per sequence, which `flops_per_sequence` reproduces.

Shapes: frames [B, T, C, H, W] → prediction [B, horizon, C, H, W]; H and W divisible by `patch`.

Every layer call goes through `ConvLSTM.forward`, so `to_reference(model)` turns this model into
its naive twin as well (bench's baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlstm_cli.model.convlstm import ConvLSTM


class StackedConvLSTM(nn.Module):
    """ConvLSTM layers stacked on patched frames, with a 1×1 head back to patches.

    Args:
        in_channels: frame channels (1 gray).
        hidden_channels: channels of each layer, bottom first (OpenSTL-S: four of 128).
        kernel_size: odd kernel of every layer (OpenSTL-S: 5).
        patch: space-to-depth factor applied to the frames (OpenSTL-S: 4).
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: tuple[int, ...] = (128, 128, 128, 128),
        kernel_size: int = 5,
        patch: int = 4,
    ) -> None:
        super().__init__()
        self.in_channels, self.patch, self.kernel_size = in_channels, patch, kernel_size
        self.hidden_channels = tuple(hidden_channels)
        cin = in_channels * patch * patch
        widths = (cin, *self.hidden_channels)
        self.layers = nn.ModuleList(
            ConvLSTM(widths[i], widths[i + 1], kernel_size) for i in range(len(self.hidden_channels))
        )
        self.head = nn.Conv2d(self.hidden_channels[-1], cin, 1, bias=False)

    def step_all(self, x: Tensor, states: list) -> Tensor:
        """All layers over x [B, T, C_patch, h, w] from `states` (updated in place); top outputs."""
        for i, layer in enumerate(self.layers):
            x, states[i] = layer(x, states[i])
        return x

    def step_patches(self, x: Tensor, states: list | None) -> tuple[Tensor, list]:
        """Patches x [B, T, C_patch, h, w] through every layer from `states` (None: zeros); the head's
        one-step prediction [B, C_patch, h, w] after the last of them, and the new states."""
        states = list(states) if states is not None else [None] * len(self.layers)
        # Each layer runs over all T frames at once (its input convolution batched over time).
        return self.head(self.step_all(x, states)[:, -1]), states

    def observe(self, frames: Tensor, states: list | None = None) -> tuple[Tensor, list]:
        """Fold frames [B, T, C, H, W] into the layers' states and predict the frame after the last.

        The one-step prediction is a 1×1 head on the top layer's last output, so carrying `states`
        from call to call (streaming) costs one recurrent step per frame, however long the clip.

        Returns:
            (prediction [B, C, H, W], the new per-layer (h, c) states; `states` is not modified).
        """
        b, t = frames.shape[:2]
        x = F.pixel_unshuffle(frames.flatten(0, 1), self.patch).unflatten(0, (b, t))
        pred, states = self.step_patches(x, states)
        return F.pixel_shuffle(pred, self.patch), states

    def forward(self, frames: Tensor, horizon: int = 10) -> Tensor:
        """Observe `frames`, then predict `horizon` frames, feeding each prediction back in.

        Args:
            frames: [B, T, C, H, W].
            horizon: frames to predict (≥ 1).

        Returns:
            [B, horizon, C, H, W] predictions (linear head, as OpenSTL).
        """
        b, t = frames.shape[:2]
        x = F.pixel_unshuffle(frames.flatten(0, 1), self.patch).unflatten(0, (b, t))
        pred, states = self.step_patches(x, None)
        preds = [pred]
        for _ in range(horizon - 1):  # fed back as patches: no unpatch/patch round trip per step
            pred, states = self.step_patches(pred.unsqueeze(1), states)
            preds.append(pred)
        out = F.pixel_shuffle(torch.stack(preds, 1).flatten(0, 1), self.patch)
        return out.unflatten(0, (b, horizon))

    def flops_per_sequence(self, steps: int, height: int, width: int) -> int:
        """Forward FLOPs (2 per MAC) of the recurrent convolutions for `steps` steps on one sequence.

        Per layer and step: 2·k²·(C_in + C_h)·4·C_h·h·w, with h, w the patched size. The 1×1 head
        and the pointwise gate math are left out (< 0.1 %).
        """
        h, w = height // self.patch, width // self.patch
        k2 = self.kernel_size**2
        total = 0
        for layer in self.layers:
            cin = layer.in_channels
            total += 2 * k2 * (cin + layer.hidden_channels) * 4 * layer.hidden_channels * h * w
        return total * steps

