"""One training step, shared by `convlstm train` and `convlstm bench`, and the optimizer it steps.

A step runs the model over one or more consecutive chunks from the carried state (the truncated-BPTT
window), averages their losses, back-propagates through all of them, clips the gradient norm and
updates the weights; the state comes back detached (the TBPTT boundary). No host synchronisation is
needed: an update whose loss or gradient is not finite is skipped on the device through fused
AdamW's `found_inf` (as torch's GradScaler does), so the step can also be captured in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from convlstm_cli.model.convlstm import one_weight_gradient
from convlstm_cli.model.state import StreamState

Chunk = tuple[Tensor, Tensor, Tensor | None]  # inputs [B,T,C,H,W], targets [B,K,C,H,W], reset [B] or None


def make_optimizer(params, device: torch.device, lr: float, weight_decay: float = 0.01,
                   capturable: bool = False) -> tuple[torch.optim.Optimizer, bool]:
    """AdamW, fused (one kernel for all parameters, `found_inf` support) where torch has it here.

    Args:
        capturable: keep the step count on the device (CUDA-graph capture).

    Returns:
        (optimizer, fused).
    """
    params = list(params)
    extra = {"capturable": True} if capturable else {}
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True, **extra), True
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True, **extra), False


def detached(state):
    """The carried state cut from the graph (a StreamState, a layer's (h, c), or None)."""
    if isinstance(state, StreamState):
        return state.detach()
    if isinstance(state, tuple):
        return tuple(t.detach() for t in state)
    return state


def train_step(
    net: Callable,
    optimizer: torch.optim.Optimizer,
    chunks: Sequence[Chunk],
    state,
    *,
    params: Sequence[Tensor],
    fused: bool,
    amp: Callable = torch.autocast,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.mse_loss,
    grad_clip: float = 0.0,
    start: Callable | None = None,
    host_sync: bool = True,
) -> tuple[Tensor, Tensor, object]:
    """One optimizer step over consecutive chunks.

    Args:
        net: the model (possibly compiled or DDP-wrapped): ``net(inputs, state) → (prediction, state)``.
        optimizer, fused: from `make_optimizer`.
        chunks: (inputs, targets, reset) per chunk, on the model's device, in [0, 1].
        state: the state carried in from the previous step.
        params: the parameters whose gradient norm is clipped.
        amp: a context factory for the forward pass (autocast, or a no-op).
        loss_fn: loss of a float32 prediction against the targets.
        grad_clip: max global gradient norm (0: no clipping).
        start: ``start(inputs, reset, state) → state`` prepares each chunk's starting state (zero the
            reset lanes, make zeros for a first chunk); None uses the carried state as it is.
        host_sync: where `found_inf` is missing (unfused AdamW), check finiteness on the host (one
            sync per step) to skip a bad update; False always steps (inside a CUDA graph).

    Returns:
        (loss, bad, state): the mean loss (detached), a bool tensor that is True when the update was
        skipped, and the state after the last chunk, detached.
    """
    losses = []
    with one_weight_gradient():  # each recurrent weight's gradient: one convolution over all steps (CPU)
        for inputs, targets, reset in chunks:
            if start is not None:
                state = start(inputs, reset, state)
            with amp():
                pred, state = net(inputs, state)
            losses.append(loss_fn(pred.float(), targets))
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state = detached(state)  # TBPTT boundary: keep the values, drop the graph
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    bad = ~(torch.isfinite(norm) & torch.isfinite(loss))
    if fused:
        optimizer.found_inf = bad.float()  # fused AdamW skips the update where this is 1
        optimizer.step()
    elif not host_sync or not bool(bad):
        optimizer.step()
    return loss.detach(), bad, state
