"""Set up and time one model on one rung: a training step, or an inference call.

A training step is `convlstm train`'s own (`convlstm_cli.step.train_step`): forward under autocast
from the carried state, MSE loss in float32, backward, gradient clipping, AdamW step (fused where
torch has it), state detached. An inference call predicts `horizon`
frames from `context` frames for a batch of sequences, from a zero state.

On CUDA every rung but the naive one runs with `cudnn.benchmark` (fixed shapes: cuDNN picks its
fastest algorithm once), and the fp32 rungs compute in true float32: PyTorch lets cuDNN convolutions
use TF32 by default (a 10-bit mantissa), which would make the "fp32" reference a reduced-precision
run and its MFU exceed the fp32 peak measured beside it. CUDA graphs capture the whole step (forward, backward and the optimizer) once and replay it: inputs,
targets and the carried state live in static tensors, autocast runs with its cast cache off (a graph
must not keep casts from capture time), and AdamW is `capturable` so its step count stays on the GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from convlstm_cli.bench.cases import ModelCase, Rung
from convlstm_cli.device import autocast
from convlstm_cli.model.reference import to_reference
from convlstm_cli.model.state import StreamState
from convlstm_cli.step import make_optimizer, train_step


def build(case: ModelCase, rung: Rung, device: torch.device, train: bool) -> tuple[nn.Module, Callable]:
    """The model for this rung (seeded, on device) and the callable to run it (compiled or not)."""
    torch.manual_seed(0)
    if device.type == "cuda":
        # Shapes are fixed: let cuDNN time its algorithms once (the naive reference keeps the default).
        torch.backends.cudnn.benchmark = not rung.naive
    model = case.build().to(device)
    if rung.naive:
        model = to_reference(model)
    if rung.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train(train)
    net = torch.compile(model) if rung.compile else model
    return model, net


@contextmanager
def fp32_math(precision: str):
    """cuDNN's TF32 off while fp32 work runs (IEEE float32), on for the rest (PyTorch's default)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def amp(device: torch.device, rung: Rung, graphs: bool = False):
    if graphs and rung.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return autocast(device, rung.precision)


def train_setup(case: ModelCase, rung: Rung, device: torch.device) -> Callable[[], Callable[[], None]]:
    """A set-up function for `timing.measure` returning one training step (`convlstm_cli.step`)."""

    def setup() -> Callable[[], None]:
        model, net = build(case, rung, device, train=True)
        params = list(model.parameters())
        opt, fused = make_optimizer(params, device, lr=1e-4, capturable=rung.graphs)
        x, y = case.data(device, case.batch)
        box = {"state": case.initial_state(model, x)}
        if rung.graphs and box["state"] is not None:  # static and separate: zero h and c may share storage
            box["state"] = StreamState([(h.clone(), c.clone()) for h, c in box["state"]])

        def step() -> None:
            # Gradient clipping at 1.0 as `convlstm train` does; inside a graph nothing may sync the host.
            _, _, new = train_step(lambda inp, s: case.forward(net, inp, s), opt, [(x, y, None)], box["state"],
                                   params=params, fused=fused, amp=lambda: amp(device, rung, rung.graphs),
                                   grad_clip=1.0, host_sync=not rung.graphs)
            if rung.graphs:
                _copy_state(box["state"], new)
            else:
                box["state"] = new

        return capture(step, device) if rung.graphs else step

    return setup


def capture(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """Capture `fn` in a CUDA graph after three warm-up calls on a side stream; return its replay.

    Everything `fn` reads and writes between calls must live in static tensors (the carried state
    is copied back into the tensors it was read from, see `train_setup`).
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm up off the default stream, as capture requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _copy_state(static, new) -> None:
    if isinstance(static, StreamState):
        with torch.no_grad():
            for (h, c), (h2, c2) in zip(static, new):
                h.copy_(h2)
                c.copy_(c2)


def infer_setup(case: ModelCase, rung: Rung, device: torch.device) -> Callable[[], Callable[[], None]]:
    """A set-up function for `timing.measure` returning one inference call (a batch of sequences)."""

    def setup() -> Callable[[], None]:
        model, net = build(case, rung, device, train=False)
        x, _ = case.data(device, case.infer_batch)

        def run():
            with torch.inference_mode(), amp(device, rung, rung.graphs):
                state = case.initial_state(model, x)
                return case.forward(net, x, state)

        return capture(run, device) if rung.graphs else run

    return setup
