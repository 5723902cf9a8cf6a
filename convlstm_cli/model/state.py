"""StreamState: the encoder's (h, c) for every level, carried from one chunk of a stream to the next.

Lane b of the batch is one video; its state continues across chunks until `reset(mask)` zeroes it
(when the lane starts a new video). `detach()` marks a truncated-BPTT boundary. The tensors are
float32 even under bf16 autocast, live on the input's device and are created lazily from the first
input, so an empty `StreamState()` can be handed to the model before the resolution is known.
"""

from __future__ import annotations

import torch
from torch import Tensor

State = tuple[Tensor, Tensor]


class StreamState:
    """Per-level (h, c) of an encoder, each [B, C_l, H_l, W_l] float32.

    Args:
        levels: list of (h, c) per encoder level, bottom first; None or [] for a lazy, empty state.
    """

    def __init__(self, levels: list[State] | None = None) -> None:
        self.levels: list[State] = list(levels or [])

    # -- queries ---------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        # len(), not bool(list): Dynamo in torch 2.11 cannot trace bool() of a list (a graph break)
        return len(self.levels) > 0

    @property
    def batch_size(self) -> int | None:
        return self.levels[0][0].shape[0] if self.levels else None

    def __len__(self) -> int:
        return len(self.levels)

    def __getitem__(self, level: int) -> State:
        return self.levels[level]

    def __iter__(self):
        return iter(self.levels)

    def __repr__(self) -> str:
        shapes = [tuple(h.shape) for h, _ in self.levels]
        return f"StreamState(levels={shapes})"

    # -- TBPTT and lanes ---------------------------------------------------------------------------
    def detach(self) -> StreamState:
        """The same state cut from the autograd graph (a truncated-BPTT boundary); returns self."""
        self.levels = [(h.detach(), c.detach()) for h, c in self.levels]
        return self

    def reset(self, mask: Tensor) -> StreamState:
        """Zero the lanes where `mask` [B] is true, leave the others untouched; returns self.

        No host synchronisation (the mask is never read on the host). Detached state is zeroed in
        place (no new allocation); state that is still part of a graph is replaced by a
        `torch.where` so autograd's saved tensors are not overwritten.
        """
        if not self.levels:
            return self
        b = self.batch_size
        if mask.dim() != 1 or mask.shape[0] != b:
            raise ValueError(f"reset mask expected shape [{b}], got {list(mask.shape)}")
        mask = mask.to(device=self.levels[0][0].device, dtype=torch.bool, non_blocking=True).view(b, 1, 1, 1)
        out = []
        for h, c in self.levels:
            if h.requires_grad or c.requires_grad:
                zero = h.new_zeros(())
                out.append((torch.where(mask, zero, h), torch.where(mask, zero, c)))
            else:
                out.append((h.masked_fill_(mask, 0.0), c.masked_fill_(mask, 0.0)))
        self.levels = out
        return self

    def to(self, device: torch.device | str) -> StreamState:
        """A state with every tensor on `device` (float32)."""
        return StreamState([(h.to(device, torch.float32), c.to(device, torch.float32)) for h, c in self.levels])

    def clone(self) -> StreamState:
        return StreamState([(h.clone(), c.clone()) for h, c in self.levels])

    # -- validation --------------------------------------------------------------------------------
    def check(self, expected: list[tuple[int, int, int, int]]) -> None:
        """Raise ValueError unless the levels have exactly the `expected` [B, C, H, W] shapes."""
        if len(self.levels) != len(expected):
            raise ValueError(f"StreamState expected {len(expected)} levels, got {len(self.levels)}")
        for level, ((h, c), want) in enumerate(zip(self.levels, expected)):
            for name, t in (("h", h), ("c", c)):
                got = tuple(t.shape)
                if got == tuple(want):
                    continue
                what = (
                    "batch size" if got[0] != want[0]
                    else "channels" if got[1:2] != want[1:2]
                    else "resolution"
                )
                raise ValueError(
                    f"StreamState level {level} {name}: wrong {what}: expected [B, C, H, W] = "
                    f"{list(want)}, got {list(got)}"
                )

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Plain tensors (CPU) keyed `h{level}` / `c{level}`: loadable with weights_only=True."""
        out: dict[str, Tensor] = {}
        for i, (h, c) in enumerate(self.levels):
            out[f"h{i}"], out[f"c{i}"] = h.detach().cpu(), c.detach().cpu()
        return out

    def load_state_dict(self, sd: dict[str, Tensor], device: torch.device | str | None = None) -> StreamState:
        """Restore from `state_dict()` output (onto `device` if given); returns self."""
        n = len(sd) // 2
        if set(sd) != {f"{k}{i}" for i in range(n) for k in "hc"}:
            raise ValueError(f"not a StreamState state_dict: keys {sorted(sd)}")
        self.levels = [
            (sd[f"h{i}"].to(device or sd[f"h{i}"].device, torch.float32),
             sd[f"c{i}"].to(device or sd[f"c{i}"].device, torch.float32))
            for i in range(n)
        ]
        return self
