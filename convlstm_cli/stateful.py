"""`Stateful`: keep any recurrent module's state from one call to the next, the way it should be kept.

The widely copied recipe for stateful RNNs in PyTorch stores ``self.hidden = (h, c)`` between calls.
It fails three ways, and this wrapper fixes each:

1. **Detaching.** A stored state still points into the previous batch's graph, so the second
   ``backward()`` fails ("Trying to backward through the graph a second time"). `Stateful` detaches
   the state after every call (truncated backpropagation through time); ``detach=False`` keeps the
   graph, for backpropagation through several calls that ends in your own `detach()`.
2. **Per-lane reset.** Lane b of the batch is one sequence. When it ends and a new one starts in
   its place, only that lane must restart: ``reset(mask)`` zeroes the masked lanes with
   `torch.where`, on the device, without a host synchronisation. ``reset()`` restarts every lane.
3. **A changing batch size.** A state of batch B cannot continue a batch of B' ≠ B: which lanes
   would be whose? By default this raises a clear error (silently truncating or padding would mix
   sequences up); ``on_batch_change="reset"`` starts all lanes fresh instead, the usual need at the
   short last batch of an epoch in inference.

It wraps `torch.nn.LSTM`, `nn.GRU`, `nn.RNN`, this package's `ConvLSTM2d`, `ConvLSTM` (one layer)
and `EncoderForecaster`, and returns what the module returns without the state. The carried state is
part of `state_dict()` (as extra state: a checkpoint resumes mid-sequence) and moves with `.to()`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from convlstm_cli.model.state import StreamState


def _map(state: Any, fn) -> Any:
    """Apply fn to every tensor of a state (tensor, tuples of them, or a StreamState)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, StreamState):
        return StreamState([(fn(h), fn(c)) for h, c in state])
    return type(state)(_map(s, fn) for s in state)


def _flat(state: Any) -> list[Tensor]:
    if state is None:
        return []
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, StreamState):
        return [t for hc in state for t in hc]
    return [t for s in state for t in _flat(s)]


class Stateful(nn.Module):
    """A recurrent module whose state is kept between calls (see the module docstring).

    Args:
        module: nn.LSTM, nn.GRU, nn.RNN, ConvLSTM2d, ConvLSTM or EncoderForecaster.
        detach: detach the kept state after each call (truncated BPTT).
        on_batch_change: "error" (default) or "reset" when a call's batch size differs from the state's.
    """

    def __init__(self, module: nn.Module, detach: bool = True, on_batch_change: str = "error") -> None:
        super().__init__()
        if on_batch_change not in ("error", "reset"):
            raise ValueError(f"on_batch_change must be 'error' or 'reset', got {on_batch_change!r}")
        self.module, self.detach, self.on_batch_change = module, detach, on_batch_change
        self.kind = _kind(module)
        self.state: Any = None

    # -- where the batch is -----------------------------------------------------------------------
    @property
    def state_batch_dim(self) -> int:
        """The batch dimension of the state tensors (1 for nn.LSTM-style stacked states, else 0)."""
        stacked = self.kind == "rnn" or (self.kind == "convlstm2d" and self.module.stacked)
        return 1 if stacked else 0

    def _input_batch(self, x: Tensor) -> int:
        batch_first = getattr(self.module, "batch_first", True)
        if self.kind == "rnn" and x.dim() == 2:  # an unbatched sequence [T, features]
            return 1
        return x.shape[0] if batch_first or self.kind in ("convlstm", "forecaster") else x.shape[1]

    def batch_size(self) -> int | None:
        """Lanes of the kept state (None: no state yet)."""
        tensors = _flat(self.state)
        return tensors[0].shape[self.state_batch_dim] if tensors else None

    # -- calls ------------------------------------------------------------------------------------
    def forward(self, x: Tensor, *args, **kwargs):
        """Run the module from the kept state; keep the new one; return the module's output."""
        kept = self.batch_size()
        if kept is not None and kept != self._input_batch(x):
            if self.on_batch_change == "error":
                raise ValueError(
                    f"Stateful: the batch size changed from {kept} to {self._input_batch(x)}, but the kept state has "
                    "one lane per sequence; call reset() first, or wrap with on_batch_change='reset'"
                )
            self.state = None
        out, state = self.module(x, self.state, *args, **kwargs)
        self.state = _map(state, torch.Tensor.detach) if self.detach else state
        return out

    def reset(self, mask: Tensor | None = None) -> None:
        """Restart every lane (no mask) or the lanes where mask [B] is true, without a host sync."""
        if mask is None or self.state is None:
            self.state = None if mask is None else self.state
            return
        b = self.batch_size()
        if mask.dim() != 1 or mask.shape[0] != b:
            raise ValueError(f"Stateful.reset: mask must be [{b}], got {list(mask.shape)}")
        dim = self.state_batch_dim

        def zero_lanes(t: Tensor) -> Tensor:
            shape = [1] * t.dim()
            shape[dim] = b
            m = mask.to(device=t.device, dtype=torch.bool, non_blocking=True).view(shape)
            return torch.where(m, torch.zeros((), dtype=t.dtype, device=t.device), t)

        self.state = _map(self.state, zero_lanes)

    # -- what survives a restart, and where the state lives -----------------------------------------
    def get_extra_state(self) -> dict:
        return {"tensors": [t.detach().cpu() for t in _flat(self.state)]}

    def set_extra_state(self, extra: dict) -> None:
        tensors = list(extra.get("tensors", []))
        self.state = _unflatten(self.kind, self.module, tensors) if tensors else None

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.state = _map(self.state, fn)  # .to(device) and friends move the kept state too
        return self


def _kind(module: nn.Module) -> str:
    from convlstm_cli.model.convlstm import ConvLSTM
    from convlstm_cli.model.convlstm2d import ConvLSTM2d
    from convlstm_cli.model.forecaster import EncoderForecaster

    if isinstance(module, nn.RNNBase):
        return "rnn"
    for cls, kind in ((ConvLSTM2d, "convlstm2d"), (ConvLSTM, "convlstm"), (EncoderForecaster, "forecaster")):
        if isinstance(module, cls):
            return kind
    raise TypeError(f"Stateful wraps nn.LSTM, nn.GRU, nn.RNN, ConvLSTM2d, ConvLSTM or EncoderForecaster, "
                    f"not {type(module).__name__}")


def _unflatten(kind: str, module: nn.Module, tensors: list[Tensor]):
    """The kept state's structure back from its flat list of tensors (see `_flat`)."""
    if kind == "forecaster":
        return StreamState([(tensors[i], tensors[i + 1]) for i in range(0, len(tensors), 2)])
    if kind == "rnn":
        return tuple(tensors) if isinstance(module, nn.LSTM) else tensors[0]
    if kind == "convlstm2d" and not module.stacked:
        n = module.num_layers
        return tuple(tensors[:n]), tuple(tensors[n:])
    return tuple(tensors)
