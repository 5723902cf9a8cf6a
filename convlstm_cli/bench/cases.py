"""What the benchmark runs: the two models at their sizes, and the ladder of execution paths.

Models:
- ``default``: `EncoderForecaster` with the defaults of ``convlstm train`` (architecture, frame size,
  context, horizon, batch size), carrying its `StreamState` from one step to the next as training does.
- ``openstl-s``: `StackedConvLSTM`, the size of OpenSTL's ConvLSTM-S (4 layers × 128 channels, 5×5, on
  64×64 frames as 4×4 patches, 10 frames observed → 10 predicted: 56.8 GMAC per sequence).

Rungs (each adds one thing to the one before, except the naive baseline):
naive fp32 (`to_reference`: per-step conv over concat(x, h)) → fp32 (input convolutions batched over
time) → + channels_last → + bf16 autocast (where supported) → + torch.compile → + CUDA graphs (cuda).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Rung:
    """One execution path."""

    name: str
    naive: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    graphs: bool = False

    def describe(self) -> dict:
        return {"rung": self.name, "naive": self.naive, "precision": self.precision,
                "channels_last": self.channels_last, "compile": self.compile, "cuda_graphs": self.graphs}


def ladder(device: torch.device, bf16: bool, compile: bool = True) -> list[Rung]:
    """The rungs for this device: bf16 only where supported, CUDA graphs only on cuda."""
    prec = "bf16" if bf16 else "fp32"
    rungs = [Rung("naive fp32", naive=True), Rung("fp32"), Rung("+channels_last", channels_last=True)]
    if bf16:
        rungs.append(Rung("+bf16", precision="bf16", channels_last=True))
    if compile:
        rungs.append(Rung("+compile", precision=prec, channels_last=True, compile=True))
    if device.type == "cuda":
        rungs.append(Rung("+cuda graphs", precision=prec, channels_last=True, compile=compile, graphs=True))
    return rungs


@dataclass
class ModelCase:
    """A model, its input sizes and how to call it.

    Attributes:
        name: "default" or "openstl-s".
        build: makes the model (fp32, on the CPU).
        batch: training batch size; infer_batch: inference batch size.
        context, horizon: frames observed and predicted per sequence.
        size, channels: frame height = width, and channels.
        stateful: the model carries a `StreamState` between calls (the default model).
    """

    name: str
    build: Callable[[], nn.Module]
    batch: int
    infer_batch: int
    context: int
    horizon: int
    size: int
    channels: int = 1
    stateful: bool = False

    @property
    def frames_per_sequence(self) -> int:
        return self.context + self.horizon

    def data(self, device: torch.device, batch: int) -> tuple[Tensor, Tensor]:
        """Random inputs [B, context, C, S, S] and targets [B, horizon, C, S, S] in [0, 1]."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, self.context, self.channels, self.size, self.size, generator=g)
        y = torch.rand(batch, self.horizon, self.channels, self.size, self.size, generator=g)
        return x.to(device), y.to(device)

    def initial_state(self, model: nn.Module, x: Tensor):
        """Zero state of the right shapes for a stateful model, else None."""
        return model.initial_state(x, None) if self.stateful else None

    def forward(self, net: Callable, x: Tensor, state):
        """(prediction, new state) for either model."""
        if self.stateful:
            return net(x, state)
        return net(x, self.horizon), None

    def settings(self) -> dict:
        return {"batch": self.batch, "infer_batch": self.infer_batch, "context": self.context,
                "horizon": self.horizon, "size": self.size, "channels": self.channels}


def default_case(device: torch.device, quick: bool) -> ModelCase:
    """The model and data sizes `convlstm train` uses by default."""
    from convlstm_cli.config import RunConfig
    from convlstm_cli.model.forecaster import EncoderForecaster, ModelConfig

    cfg = RunConfig()
    model_cfg = cfg.model
    size, batch, context = cfg.data.hw()[0], cfg.data.batch_size, cfg.data.context
    if quick:
        model_cfg = ModelConfig(hidden_channels=(8, 16), horizon=2, stem_channels=8)
        size, batch, context = 32, 2, 4
    infer_batch = batch if device.type == "cpu" else 256
    return ModelCase("default", lambda: EncoderForecaster.from_config(model_cfg), batch, infer_batch,
                     context, model_cfg.horizon, size, model_cfg.in_channels, stateful=True)


def openstl_case(device: torch.device, quick: bool) -> ModelCase:
    """OpenSTL ConvLSTM-S on Moving-MNIST-sized input (a tiny stand-in with --quick)."""
    from convlstm_cli.bench.stacked import StackedConvLSTM

    if quick:
        return ModelCase("openstl-s", lambda: StackedConvLSTM(hidden_channels=(16, 16)), 1, 1, 4, 4, 32)
    # OpenSTL trains ConvLSTM-S with batch 16; on a CPU a step at batch 4 already takes seconds.
    batch, infer_batch = (4, 4) if device.type == "cpu" else (16, 256)
    return ModelCase("openstl-s", StackedConvLSTM, batch, infer_batch, 10, 10, 64)
