"""`train.channels_last: auto`: the memory layout a run trains in, timed where it is not known.

Why time it: in fp32 on a CPU the faster layout depends on the model and the CPU (oneDNN's NHWC and
NCHW convolution kernels). `convlstm bench` measured the openstl-s training step 23 % slower in
channels_last on a 2-core AVX2 EPYC, 9 % slower on the AMX Xeon and 2 % faster on the AVX-512 EPYC;
the default model's step was 5-9 % faster in it on all three. In bf16 (AMX: 2-4×) and on GPUs
channels_last wins by far, so auto takes it there without timing. Like `cudnn.benchmark`, which
times convolution algorithms once for fixed shapes, the timing runs once at the start: a forward
and backward of one chunk at the training shape in each layout, alternated. The layouts gave the
same forward values and gradients equal to ~1e-8 (the default model and a 64-channel 5×5 one); the
choice is written into the run's config so that a resumed run keeps it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from convlstm_cli.model.convlstm import one_weight_gradient


@dataclass
class LayoutChoice:
    channels_last: bool
    why: str  # "asked", or for the run's header: "auto: bf16", "auto, timed: …" (the two timings)

    @property
    def name(self) -> str:
        return "channels_last" if self.channels_last else "NCHW"


def known(setting: bool | str, device: torch.device, precision: str) -> LayoutChoice | None:
    """The layout when it needs no timing: as asked, or auto on a GPU or in bf16; None: time both."""
    if not isinstance(setting, str):
        return LayoutChoice(bool(setting), "asked")
    if device.type != "cpu":
        return LayoutChoice(True, f"auto: {device.type}")
    if precision == "bf16":
        return LayoutChoice(True, "auto: bf16")
    return None


def step_seconds(model: nn.Module, net: Callable, frames: Tensor, amp: Callable) -> float:
    """Seconds of one forward and backward of `net` on `frames` in the model's current layout."""
    start = time.perf_counter()
    with one_weight_gradient():
        with amp():
            pred, _ = net(frames, model.initial_state(frames, None))
        pred.float().square().mean().backward()  # any loss: its backward costs the same
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


LONG_STEP_S = 5.0  # steps this long vary by a few per cent: one timed step per layout is enough


def time_layouts(model: nn.Module, net: Callable, frames: Tensor, amp: Callable,
                 repeats: int = 2) -> dict[bool, float]:
    """Best seconds of a step in each layout ({channels_last: seconds}), alternated so that a
    neighbour's load or a clock change falls on both; each layout's first step (its kernels'
    set-up) is not counted, and a model whose set-up steps both took over LONG_STEP_S is timed
    once more per layout instead of `repeats` times. The model is left in NCHW."""
    first = {cl: _step_in(model, cl, net, frames, amp) for cl in (False, True)}
    rounds = 1 if min(first.values()) > LONG_STEP_S else repeats
    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for cl in (False, True):
            best[cl] = min(best[cl], _step_in(model, cl, net, frames, amp))
    model.to(memory_format=torch.contiguous_format)
    return best


def _step_in(model: nn.Module, channels_last: bool, net: Callable, frames: Tensor, amp: Callable) -> float:
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return step_seconds(model, net, frames, amp)


def choose(setting: bool | str, model: nn.Module, net: Callable, shape: tuple[int, ...], device: torch.device,
           precision: str, amp: Callable) -> LayoutChoice:
    """Resolve `train.channels_last` for this model, device and precision (see the module note).

    Args:
        setting: true, false or "auto".
        model: the model, in NCHW; `net`: how training calls it (`EveryStep` for a dense loss).
        shape: a training batch's [B, T, C, H, W].
        amp: the training's autocast context factory.
    """
    choice = known(setting, device, precision)
    if choice is not None:
        return choice
    # Any values serve; drawn from their own generator, so the run's random stream stays as seeded.
    frames = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
    best = time_layouts(model, net, frames, amp)
    ms = {k: round(v * 1000) for k, v in best.items()}
    why = f"auto, timed: a chunk {ms[True]:,} ms in channels_last, {ms[False]:,} in NCHW"
    return LayoutChoice(best[True] <= best[False], why)


def layout_note(choice: LayoutChoice) -> str:
    """The run header's words: "channels_last", "NCHW (auto, timed: …)", "channels_last (auto: cuda)"."""
    return choice.name if choice.why == "asked" else f"{choice.name} ({choice.why})"
