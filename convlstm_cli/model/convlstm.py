"""The ConvLSTM layer of Shi et al. 2015, "Convolutional LSTM Network", eqs. (3):

    i_t = σ(W_xi * X_t + W_hi * H_{t-1} + W_ci ∘ C_{t-1} + b_i)
    f_t = σ(W_xf * X_t + W_hf * H_{t-1} + W_cf ∘ C_{t-1} + b_f)
    g_t = tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)
    C_t = f_t ∘ C_{t-1} + i_t ∘ g_t
    o_t = σ(W_xo * X_t + W_ho * H_{t-1} + W_co ∘ C_t + b_o)
    H_t = o_t ∘ tanh(C_t)

Shapes: x [B, T, C_in, H, W] → out [B, T, C_h, H, W]; state (h, c), each [B, C_h, H, W].

Two choices made for speed and generality:
- The input-to-hidden convolution W_x* does not depend on the recurrence, so it runs once over all
  B·T frames; only W_h* runs per step. All four gates come from one convolution each (4·C_h
  output channels, gate order i, f, g, o as in `torch.nn.LSTM`).
- Peephole weights W_c* are per channel ([C_h, 1, 1]) rather than per pixel as in the paper, so no
  spatial size is baked into the parameters and a model runs at any resolution.

Under autocast the convolutions run in bf16, but the gate pre-activations are cast to float32 before
the nonlinearities so the cell state C and the returned state stay float32 across long streams.

Optionally (`advect`) the state moves with what it holds, before each step (after TrajGRU, Shi et
al. 2017, whose recurrent connections follow a flow the cell predicts):

    F_t = W_hF * H_{t-1}                      a displacement (dy, dx) per cell, in cells
    H_{t-1}, C_{t-1} ← warp(H_{t-1}, F_t), warp(C_{t-1}, F_t)    (bilinear)

In eqs. (3) C_t = f_t ∘ C_{t-1} + i_t ∘ g_t is pointwise: a memory can only move across the grid by
being written out through H and back in through W_h*, one kernel radius per step, which is how a
hidden object's position would have to travel behind an occluder. A warped C carries it along at a
sub-cell speed with the forget gate left open. W_hF starts at zero, so an untrained advecting layer
is exactly the plain one.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, Tensor]


def tanh(x: Tensor) -> Tensor:
    """tanh, computed on the CPU as 2·σ(2x) − 1 (the same function, to within 2e-7 in float32).

    PyTorch's CPU tanh is a 1-ulp vector routine about 5× slower than its sigmoid, and the gate math
    is memory- and transcendental-bound at small sizes; this form cuts the forward pointwise time of a
    cell step by ~40 %. CUDA's tanh is fast as it is.
    """
    if x.device.type == "cpu":
        return torch.sigmoid(x * 2) * 2 - 1
    return torch.tanh(x)


def time_major(x: Tensor) -> Tensor:
    """[B, T, …] → [T·B, …]: every frame of a sequence batch as one batch of images, time-major.

    Sequences inside the model are stored time-major ([T, B, …] in memory, viewed as [B, T, …]), so
    this is a view, and gradients come back in the layout the convolutions wrote. Batch-major
    flattening made autograd reorder every gate gradient twice (13 % of a CPU training step).
    """
    return x.transpose(0, 1).flatten(0, 1)


def batch_major(y: Tensor, b: int, t: int) -> Tensor:
    """The inverse of `time_major`: [T·B, …] → [B, T, …] (a view)."""
    return y.unflatten(0, (t, b)).transpose(0, 1)


def per_frame(module: nn.Module, x: Tensor) -> Tensor:
    """Apply a 2-D module to every frame of [B, T, C, H, W] as one batch of T·B images (time-major)."""
    return batch_major(module(time_major(x)), *x.shape[:2])


def stack_steps(xs: list[Tensor]) -> Tensor:
    """Per-step tensors [B, …] → [B, T, …], stored time-major (see `time_major`)."""
    return torch.stack(xs).transpose(0, 1)


def shift(x: Tensor, flow: Tensor) -> Tensor:
    """x [N, C, H, W] sampled at each cell displaced by flow [N, 2, H, W] (dy, dx, in cells), minus x
    as sampled in place: bilinear, edges repeated, and exactly zero for a zero flow (sampling at the
    cell centres equals x only up to the rounding of the grid, so the difference is what is added)."""
    n, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=flow.dtype) + 0.5) * (2 / h) - 1
    xs = (torch.arange(w, device=x.device, dtype=flow.dtype) + 0.5) * (2 / w) - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(n, h, w, 2)
    offset = torch.stack([flow[:, 1] * (2 / w), flow[:, 0] * (2 / h)], dim=-1)
    x = x.to(flow.dtype)
    moved = F.grid_sample(x, base + offset, mode="bilinear", padding_mode="border", align_corners=False)
    still = F.grid_sample(x, base, mode="bilinear", padding_mode="border", align_corners=False)
    return moved - still


class FusedGates(torch.autograd.Function):
    """The gate nonlinearities of eqs. (3) (no peepholes), (gates, C_{t-1}) → (H_t, C_t), with a
    hand-written backward.

    Autograd runs the cell as ~15 small operations, each a pass over a [B, C_h, H, W] tensor, and
    its backward as more, plus a concatenation of the four gate gradients: on a CPU that pointwise
    work took almost half of a small model's training step. Here one sigmoid covers all four gates
    (tanh(x) = 2σ(2x) − 1, so the g block of the float32 copy is doubled first), the backward writes
    the four gate gradients into one tensor, and one `sigmoid_backward` turns them into the
    pre-activation gradient (a training step of the default model: ~8 % faster on a 2-core CPU).
    torch.compile (which fuses the plain form itself) and export (tracing) take the plain path in
    `ConvLSTM.cell`; a test checks both give the same values and gradients.
    """

    @staticmethod
    def forward(ctx, gates: Tensor, c: Tensor) -> State:
        n = gates.shape[1] // 4
        s = gates.to(torch.promote_types(gates.dtype, torch.float32), copy=True)  # at least float32
        s[:, 2 * n : 3 * n].mul_(2)
        s.sigmoid_()  # σ(i), σ(f), σ(2g), σ(o)
        i, f, g, o = s.chunk(4, dim=1)
        g = g * 2 - 1  # tanh(g)
        c_next = torch.addcmul(f * c, i, g)
        tc = torch.sigmoid(c_next * 2).mul_(2).sub_(1)  # tanh(C_t)
        ctx.save_for_backward(s, g, tc, c)
        ctx.dtype = gates.dtype
        ctx.set_materialize_grads(False)
        return o * tc, c_next

    @staticmethod
    def backward(ctx, dh: Tensor | None, dc: Tensor | None):
        s, g, tc, c_prev = ctx.saved_tensors
        i, f, _, o = s.chunk(4, dim=1)
        ds = torch.empty_like(s)  # dL/d(σ of each gate), then dL/d(pre-activation)
        di, df, dg, do = ds.chunk(4, dim=1)
        if dh is not None:
            torch.mul(dh, tc, out=do)
            dtc = dh * o
            dtc.mul_(1 - tc * tc)  # tanh' = 1 − tanh²
            dc = dtc if dc is None else dtc.add_(dc)
        else:
            do.zero_()
        if dc is None:  # neither output reached the loss (autograd still calls this, e.g. in gradcheck)
            return torch.zeros_like(s, dtype=ctx.dtype), None
        torch.mul(dc, g, out=di)
        torch.mul(dc, c_prev, out=df)
        torch.mul(dc, i, out=dg).mul_(4)  # d(2σ(2x) − 1)/dσ(2x) = 2, and the 2 of the scaled input
        dgates = torch.ops.aten.sigmoid_backward(ds, s).to(ctx.dtype)
        return dgates, (dc * f if ctx.needs_input_grad[1] else None)


class _StepWeight(torch.autograd.Function):
    """W_h → W_h cast for one unroll's steps; its backward is the weight gradient of all those steps
    as one convolution over the (H_{t-1}, dL/dgates_t) pairs that `_StepConv` leaves in `pairs`.

    Per step, W_h's gradient is a convolution over B images only; the matrix units of a CPU (AMX)
    run such small products far below their peak, and the weight gradient was the slowest part of a
    training step. The sum over steps of those gradients is one convolution over all T·B images.
    Autograd runs this node after every step's backward (they all depend on it). The same holds for
    W_x when a model calls a layer once per frame (a forecast that feeds its predictions back in).
    """

    @staticmethod
    def forward(ctx, weight: Tensor, dtype: torch.dtype, pairs: list, padding: int) -> Tensor:
        ctx.pairs, ctx.padding, ctx.dtype = pairs, padding, weight.dtype
        ctx.set_materialize_grads(False)
        w = weight.to(dtype, copy=True)
        ctx.save_for_backward(w)
        return w

    @staticmethod
    def backward(ctx, _):
        if not ctx.pairs:
            return None, None, None, None
        (w,) = ctx.saved_tensors
        h, g = (torch.cat(t) for t in zip(*ctx.pairs))
        ctx.pairs.clear()
        p = ctx.padding
        dw = torch.ops.aten.convolution_backward(g, h, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                                                 [False, True, False])[1]
        return dw.to(ctx.dtype), None, None, None


class _StepConv(torch.autograd.Function):
    """W_h * H_{t-1} (+ b) whose backward leaves the weight gradient to `_StepWeight` (see there)."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, bias: Tensor | None, pairs: list, padding: int) -> Tensor:
        ctx.save_for_backward(h, w)
        ctx.pairs, ctx.padding = pairs, padding
        return F.conv2d(h, w, None if bias is None else bias.to(w.dtype), padding=padding)

    @staticmethod
    def backward(ctx, g: Tensor):
        h, w = ctx.saved_tensors
        p = ctx.padding
        dh = None
        if ctx.needs_input_grad[0]:
            dh = torch.ops.aten.convolution_backward(g, h, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                                                     [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            ctx.pairs.append((h, g))
        db = g.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return dh, None, db, None, None


# Batch the weight gradient when a pixel's product is at least this long (C_h·k², the reduction of
# W_h * H): there the per-step gradients ran at ~40 % of the batched one's rate (openstl-s's 128·5²,
# a step 13 % faster); for short ones (the default model's 16·3², 32·3²) concatenating the steps'
# tensors cost more than it saved (+3 % a step). Measured on a 2-core AMX Xeon, bf16.
BATCH_MIN_REDUCTION = 1024
_SHARED = threading.local()  # the `one_weight_gradient` scope: conv → (W_h as cast, its pairs)


@contextmanager
def one_weight_gradient():
    """Within this block every unroll of a layer shares one `_StepWeight`: its recurrent weight
    gradient is one convolution over all the steps of all the block's forward calls (a training
    step's chunks, an encoder's frames and a forecaster's). Outside it, one per unroll."""
    outer = getattr(_SHARED, "convs", None)
    _SHARED.convs = {} if outer is None else outer
    try:
        yield
    finally:
        _SHARED.convs = outer


def batched_weight_grad(conv: nn.Conv2d, scoped_only: bool = False):
    """`conv` for the steps of one unroll (or, within `one_weight_gradient`, of every call of the
    block), with its weight gradient taken once over all of them (`_StepWeight`); or `conv` itself
    where that does not apply: torch.compile and tracing (they see plain modules), no gradient
    wanted, not a CPU (measured there only), a short reduction (`BATCH_MIN_REDUCTION`), or
    `scoped_only` (W_x: one call's frames are already one batch) outside a block."""
    w = conv.weight
    shared = getattr(_SHARED, "convs", None)
    if (not (torch.is_grad_enabled() and w.requires_grad) or w.device.type != "cpu"
            or w[0].numel() < BATCH_MIN_REDUCTION or (scoped_only and shared is None)
            or torch.compiler.is_compiling() or torch.jit.is_tracing()):
        return conv
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else w.dtype
    if shared is not None and (conv, dtype) in shared:
        w, pairs = shared[conv, dtype]
    else:
        pairs = []
        w = _StepWeight.apply(w, dtype, pairs, conv.padding[0])
        if shared is not None:
            shared[conv, dtype] = w, pairs
    return lambda h: _StepConv.apply(h.to(dtype), w, conv.bias, pairs, conv.padding[0])


class ConvLSTM(nn.Module):
    """One ConvLSTM layer unrolled over the time axis.

    Args:
        in_channels: channels of each input frame; 0 makes an input-free layer (a forecaster top
            level) that is unrolled for `steps` steps from its state alone.
        hidden_channels: channels of h and c.
        kernel_size: odd size of both convolutions ('same' padding).
        peephole: add the per-channel peephole terms W_ci, W_cf, W_co (off by default).
        forget_bias: initial bias of the forget gate (1.0 keeps memory early in training).
        bias: learn the gate biases b_* (as `torch.nn.LSTM`'s `bias`).
        advect: warp (h, c) by a flow predicted from h before each step (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        peephole: bool = False,
        forget_bias: float = 1.0,
        bias: bool = True,
        advect: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.in_channels, self.hidden_channels, self.kernel_size = in_channels, hidden_channels, kernel_size
        pad = kernel_size // 2
        gates = 4 * hidden_channels
        # One bias per gate, on the input convolution (or on the hidden one for an input-free layer).
        self.conv_x = nn.Conv2d(in_channels, gates, kernel_size, padding=pad, bias=bias) if in_channels else None
        self.conv_h = nn.Conv2d(hidden_channels, gates, kernel_size, padding=pad, bias=bias and self.conv_x is None)
        self.peephole = nn.Parameter(torch.zeros(3, hidden_channels, 1, 1)) if peephole else None
        self.conv_flow = nn.Conv2d(hidden_channels, 2, kernel_size, padding=pad) if advect else None
        if advect:  # a zero flow: the untrained layer is exactly the plain one
            nn.init.zeros_(self.conv_flow.weight)
            nn.init.zeros_(self.conv_flow.bias)
        gate_bias = self.conv_x.bias if self.conv_x is not None else self.conv_h.bias
        if gate_bias is not None:
            with torch.no_grad():
                gate_bias[hidden_channels : 2 * hidden_channels].fill_(forget_bias)

    def zero_state(self, x: Tensor, height: int, width: int) -> State:
        """Zeros (float32, or float64 for a float64 model) for (h, c) on x's device, batch size x.shape[0].

        They have the memory layout the cell returns (channels_last for a channels_last layer) and h, c
        are distinct tensors, so a compiled model sees the same strides and aliasing on the first
        chunk as on every later one, and compiles once.
        """
        shape = (x.shape[0], self.hidden_channels, height, width)
        # float32 under autocast (bf16 convs, fp32 weights); float64 for a .double() model.
        dtype = torch.promote_types(self.conv_h.weight.dtype, torch.float32)
        w = self.conv_h.weight
        cl = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        z = torch.zeros(shape, device=x.device, dtype=dtype)
        z = z.contiguous(memory_format=torch.channels_last) if cl else z
        return z, z.clone()

    def input_gates(self, x: Tensor) -> Tensor:
        """W_x * X_t + b for all frames at once: [B, T, C_in, H, W] → [B, T, 4·C_h, H, W]."""
        return per_frame(batched_weight_grad(self.conv_x, scoped_only=True), x)

    def gate_steps(self, x: Tensor) -> tuple[Tensor, ...]:
        """`input_gates` as one [B, 4·C_h, H, W] tensor per step: views unbound along T of the time-major
        result, so autograd stacks their gradients back in place, in the convolution's layout."""
        return self.input_gates(x).transpose(0, 1).unbind(0)

    def cell(self, gx: Tensor | None, state: State, conv_h=None) -> State:
        """One step of eqs. (3) given the input gates gx [B, 4·C_h, H, W] (or None); `conv_h` computes
        W_h * H (default: the layer's convolution; `run_steps` passes `batched_weight_grad`'s)."""
        h, c = self.advect(state) if self.conv_flow is not None else state
        wh = (conv_h or self.conv_h)(h)
        gates = wh if gx is None else gx + wh
        if self.peephole is None and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            return FusedGates.apply(gates, c)  # the same equations in fewer memory passes (eager)
        # At least float32 from here (c must not drift in bf16); float64 stays float64.
        i, f, g, o = gates.to(torch.promote_types(gates.dtype, torch.float32)).chunk(4, dim=1)
        if self.peephole is not None:
            i = i + self.peephole[0] * c
            f = f + self.peephole[1] * c
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * tanh(g)
        if self.peephole is not None:
            o = o + self.peephole[2] * c
        h = torch.sigmoid(o) * tanh(c)
        return h, c

    def advect(self, state: State) -> State:
        """(h, c) moved by the flow W_hF * h: bilinear, in cells; kept at least float32 (see `cell`)."""
        h, c = state
        flow = self.conv_flow(h).to(c.dtype)
        hc = torch.cat([h.to(c.dtype), c], dim=1)
        hc = hc + shift(hc, flow)
        return hc.split(self.hidden_channels, dim=1)

    def forward(self, x: Tensor | None, state: State | None = None, steps: int | None = None):
        """Run the layer over time.

        Args:
            x: [B, T, C_in, H, W], or None for an input-free layer (then `state` and `steps` are needed).
            state: (h, c) to start from, each [B, C_h, H, W]; None starts from zeros.
            steps: number of steps when x is None.

        Returns:
            (out [B, T, C_h, H, W], (h, c)) with h, c the state after the last step.
        """
        if x is None:
            if state is None or steps is None:
                raise ValueError("an input-free ConvLSTM needs both a state and a number of steps")
            gx = [None] * steps
        else:
            self.check_input(x)
            if state is None:
                state = self.zero_state(x, x.shape[-2], x.shape[-1])
            gx = self.gate_steps(x) if self.conv_x is not None else [None] * x.shape[1]
        self.check_state(state, x)
        hs, _, state = self.run_steps(gx, state)
        return stack_steps(hs), state

    def run_steps(self, gx, state: State) -> tuple[list[Tensor], list[Tensor], State]:
        """The cell over per-step input gates (or Nones): h and c after every step, and the last (h, c)."""
        hs, cs = [], []
        conv_h = batched_weight_grad(self.conv_h)
        for g in gx:
            state = self.cell(g, state, conv_h)
            hs.append(state[0])
            cs.append(state[1])
        return hs, cs, state

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[2] != self.in_channels:
            raise ValueError(
                f"ConvLSTM expected input [B, T, {self.in_channels}, H, W], got {list(x.shape)}"
            )

    def check_state(self, state: State, x: Tensor | None) -> None:
        h, c = state
        want = (
            [h.shape[0], self.hidden_channels, *h.shape[-2:]]
            if x is None
            else [x.shape[0], self.hidden_channels, x.shape[-2], x.shape[-1]]
        )
        for name, t in (("h", h), ("c", c)):
            if list(t.shape) != want:
                raise ValueError(f"ConvLSTM state {name} expected shape {want}, got {list(t.shape)}")

