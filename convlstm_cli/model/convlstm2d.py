"""`ConvLSTM2d`: a stack of ConvLSTM layers with `torch.nn.LSTM`'s conventions.

PyTorch has no ``nn.ConvLSTM2d``, yet recipes call it as if it had. This is that class, built on this
package's `ConvLSTM` layer (one cell implementation, the one tested against `torch.nn.LSTM`):

    m = ConvLSTM2d(input_channels, hidden_channels, kernel_size, num_layers=2, batch_first=True)
    out, (h_n, c_n) = m(x)              # x [B, T, C, H, W] (batch_first) or [T, B, C, H, W]
    out, (h_n, c_n) = m(x, (h_0, c_0))  # h_0, c_0 [num_layers, B, C_h, H, W]

`out` is the last layer's h at every step; `h_n` and `c_n` stack every layer's final state, as
`nn.LSTM` does. `hidden_channels` and `kernel_size` may be given per layer; when the layers' hidden
channels differ, no single tensor can hold them, and states are tuples with one tensor per layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from convlstm_cli.model.convlstm import ConvLSTM

State = tuple[Tensor, Tensor] | tuple[tuple[Tensor, ...], tuple[Tensor, ...]]


def _per_layer(value: int | Sequence[int], num_layers: int, name: str) -> tuple[int, ...]:
    values = (value,) * num_layers if isinstance(value, int) else tuple(value)
    if len(values) != num_layers:
        raise ValueError(f"ConvLSTM2d: {name} has {len(values)} entries for num_layers={num_layers}")
    return values


class ConvLSTM2d(nn.Module):
    """Multi-layer convolutional LSTM with the interface of `torch.nn.LSTM`.

    Args:
        input_channels: channels of each input frame.
        hidden_channels: channels of h and c, one value for every layer or one per layer.
        kernel_size: odd kernel size, one for every layer or one per layer.
        num_layers: stacked layers; layer k+1 reads layer k's h.
        bias: learn gate biases.
        batch_first: input and output are [B, T, C, H, W] instead of [T, B, C, H, W].
        dropout: dropout on every layer's output but the last (training only), as `nn.LSTM`.
        peephole, forget_bias: passed to each `ConvLSTM` layer.
    """

    def __init__(self, input_channels: int, hidden_channels: int | Sequence[int], kernel_size: int | Sequence[int],
                 num_layers: int = 1, bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 peephole: bool = False, forget_bias: float = 1.0) -> None:
        super().__init__()
        if num_layers < 1 or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"ConvLSTM2d: num_layers >= 1 and dropout in [0, 1] needed, got {num_layers}, {dropout}")
        self.hidden_channels = _per_layer(hidden_channels, num_layers, "hidden_channels")
        self.kernel_size = _per_layer(kernel_size, num_layers, "kernel_size")
        self.input_channels, self.num_layers, self.batch_first = input_channels, num_layers, batch_first
        self.dropout = dropout
        widths = (input_channels, *self.hidden_channels)
        self.layers = nn.ModuleList(
            ConvLSTM(widths[k], widths[k + 1], self.kernel_size[k], peephole, forget_bias, bias)
            for k in range(num_layers)
        )

    @property
    def stacked(self) -> bool:
        """Whether states are single tensors [num_layers, ...] (all layers equally wide)."""
        return len(set(self.hidden_channels)) == 1

    def forward(self, x: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        """Run every layer over the sequence.

        Args:
            x: [T, B, C, H, W], or [B, T, C, H, W] with `batch_first`.
            hx: (h_0, c_0), each [num_layers, B, C_h, H, W] (tuples per layer when widths differ);
                None starts from zeros.

        Returns:
            (output, (h_n, c_n)): the last layer's h at every step, shaped like x with C_h channels,
            and the final state of every layer, shaped like hx.
        """
        seq = x if self.batch_first else x.transpose(0, 1)
        if seq.dim() != 5:
            raise ValueError(f"ConvLSTM2d expected a 5-D input, got {list(x.shape)}")
        h0, c0 = (None, None) if hx is None else hx
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            state = None if hx is None else (h0[k], c0[k])
            seq, (h, c) = layer(seq, state)
            hs.append(h)
            cs.append(c)
            if self.dropout and self.training and k < self.num_layers - 1:
                seq = nn.functional.dropout(seq, self.dropout, training=True)
        out = seq if self.batch_first else seq.transpose(0, 1)
        if self.stacked:
            return out, (torch.stack(hs), torch.stack(cs))
        return out, (tuple(hs), tuple(cs))
