"""The encoder-forecaster of Shi et al. 2015 (§3.2), with down-/up-sampling between levels.

    encoder:    frames ─stem→ ConvLSTM_0 ─down→ ConvLSTM_1 ─down→ … ConvLSTM_{L-1}
    forecaster:           F_0 ←up─ F_1 ←up─ … F_{L-1}   (F_l starts from the encoder's (h, c) at level l)
    head:       [F_0 ─up→ features ‖ last frame x_t] ─refine→ conv → residual r
                prediction = x_t + r  (clamped to [0, 1]; gated: x_t + σ(g)·r)

Shapes: frames [B, T, C, H, W] in [0, 1] → prediction [B, horizon, C, H, W]. Level l works at
H / (s·2^l) where s is the stem stride; H and W must be divisible by s·2^(L-1) and nothing else
about the size is baked into the parameters (a model trained at 64×64 runs at 96×96).

The top forecaster level has no input: it unrolls `horizon` steps from the encoder's state alone
(as in Shi et al. 2017), so every forecaster level can run as one multi-step layer, level by level,
top-down, and the per-frame convolutions run once over all horizon frames.

`skip_last_frame` makes the model predict the change from the last observed frame x_t, which is
strong on slow video and exact on still content. Three ways (`output`):

- ``residual`` (default): x_t + r, with r from the head. The head's last convolution starts at zero,
  so an untrained model *is* the copy-last-frame predictor, exactly: validation at step 0 equals the
  baseline and training can only select something better. The head also sees x_t at full resolution
  (the encoder sees it only down-sampled), so it can shift edges by sub-pixel amounts (r ≈ −v·∇x_t).
- ``gated``: x_t + σ(g)·r, a second head map g gating the change per pixel: σ(g) → 0 keeps still
  regions exactly as they were.
- ``flow``: warp x_t by a predicted per-pixel displacement (bilinear, sub-pixel), plus a residual r:
  most change in camera footage is motion, and a shift is one smooth field to predict, where a
  residual must spell out −v·∇x_t pixel by pixel. Written as x_t + (warp(x_t, f) − warp(x_t, 0)) + r
  (`convlstm.shift`: bilinear, edges repeated), so a zero field is exactly copy-last too.
- ``logit``: σ(head + logit(x_t)), the first version's form (kept so its checkpoints load): near, not
  equal to, copy-last at the start, and a small error on every pixel.

The prediction is clamped to [0, 1] with a straight-through gradient, so the loss still pulls a value
that overshoots back in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from convlstm_cli.model.convlstm import ConvLSTM, batch_major, per_frame, shift, stack_steps, time_major
from convlstm_cli.model.state import StreamState


@dataclass
class ModelConfig:
    """Architecture of an `EncoderForecaster` (saved in every checkpoint)."""

    in_channels: int = 1
    hidden_channels: tuple[int, ...] = (32, 64)
    kernel_size: int | tuple[int, ...] = 3
    horizon: int = 5
    stem_channels: int = 16
    stem_stride: int = 2
    peephole: bool = False
    forget_bias: float = 1.0
    skip_last_frame: bool = True
    output: str = "residual"  # residual | gated | flow | logit (how the last frame is used; see the module)
    advect: bool = False  # every level's state moves by a flow it predicts (TrajGRU-like; see ConvLSTM)

    def kernels(self) -> tuple[int, ...]:
        k = self.kernel_size
        ks = (k,) * len(self.hidden_channels) if isinstance(k, int) else tuple(k)
        if len(ks) != len(self.hidden_channels):
            raise ValueError(f"kernel_size has {len(ks)} entries for {len(self.hidden_channels)} levels")
        return ks


def clamp_unit(x: Tensor) -> Tensor:
    """x clamped to [0, 1] in value, with the gradient of the identity (straight-through)."""
    return x + (x.clamp(0.0, 1.0) - x).detach()


OUTPUTS = ("residual", "gated", "flow", "logit")


def stem_conv(cin: int, cout: int, stride: int) -> nn.Conv2d:
    # stride 1 or 2: 3×3 'same'-style conv; stride ≥ 3: a patchify conv (kernel = stride, no overlap).
    k = max(3, stride)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - stride + 1) // 2)


def up_conv(cin: int, cout: int, stride: int) -> nn.Module:
    # Transposed conv with kernel 2·stride: exact ×stride up-sampling without checkerboard gaps.
    if stride == 1:
        return nn.Conv2d(cin, cout, 3, padding=1)
    # Odd strides need output_padding 1 to land on exactly H·stride.
    return nn.ConvTranspose2d(cin, cout, 2 * stride, stride=stride, padding=(stride + 1) // 2,
                              output_padding=stride % 2)


class EncoderForecaster(nn.Module):
    """Stacked ConvLSTM encoder-forecaster with an explicit, carried `StreamState`.

    Args:
        in_channels: frame channels (1 gray, 3 RGB).
        hidden_channels: channels of each level, bottom first; level l+1 runs at half the size of l.
        kernel_size: one odd kernel size for all levels, or one per level.
        horizon: frames predicted after the input frames (forward can override it).
        stem_channels: channels of the stem convolution and of the head's up-sampling.
        stem_stride: down-sampling of the stem (1, 2, or a patch size such as 4).
        peephole, forget_bias: passed to every `ConvLSTM`.
        skip_last_frame: predict the change from the last observed frame (see the module docstring).
        output: residual, gated, flow or logit: how that change is applied.
        advect: every ConvLSTM level warps its (h, c) by a flow predicted from h before each step.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: tuple[int, ...] = (32, 64),
        kernel_size: int | tuple[int, ...] = 3,
        horizon: int = 5,
        stem_channels: int = 16,
        stem_stride: int = 2,
        peephole: bool = False,
        forget_bias: float = 1.0,
        skip_last_frame: bool = True,
        output: str = "residual",
        advect: bool = False,
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        cfg = ModelConfig(in_channels, tuple(hidden_channels), kernel_size, horizon, stem_channels,
                          stem_stride, peephole, forget_bias, skip_last_frame, output, advect)
        self.cfg = cfg
        hs, ks = cfg.hidden_channels, cfg.kernels()
        act = nn.LeakyReLU(0.2)
        self.stem = nn.Sequential(stem_conv(in_channels, stem_channels, stem_stride), act)
        self.down = nn.ModuleList(
            [nn.Identity()] + [nn.Sequential(nn.Conv2d(hs[i - 1], hs[i - 1], 3, stride=2, padding=1), act)
                               for i in range(1, len(hs))]
        )
        self.encoder = nn.ModuleList(
            ConvLSTM(stem_channels if i == 0 else hs[i - 1], hs[i], ks[i], peephole, forget_bias, advect=advect)
            for i in range(len(hs))
        )
        # Forecaster level i gets the up-sampled output of level i+1 (channels hs[i]); the top none.
        self.forecaster = nn.ModuleList(
            ConvLSTM(hs[i] if i < len(hs) - 1 else 0, hs[i], ks[i], peephole, forget_bias, advect=advect)
            for i in range(len(hs))
        )
        self.up = nn.ModuleList(
            [nn.Sequential(up_conv(hs[0], stem_channels, stem_stride), act)]
            + [nn.Sequential(up_conv(hs[i], hs[i - 1], 2), act) for i in range(1, len(hs))]
        )
        self._build_head(in_channels, stem_channels, act)

    def _build_head(self, channels: int, width: int, act: nn.Module) -> None:
        cfg = self.cfg
        self.refine = None
        if not cfg.skip_last_frame or cfg.output == "logit":  # the first version's head (its checkpoints)
            self.head = nn.Conv2d(width, channels, 3, padding=1)
            if cfg.skip_last_frame:  # start near copy-last-frame: a near-zero residual in logit space
                nn.init.normal_(self.head.weight, std=1e-3)
                nn.init.zeros_(self.head.bias)
            return
        # The up-sampled features beside the last frame at full resolution, then the change.
        self.refine = nn.Sequential(nn.Conv2d(width + channels, width, 3, padding=1), act)
        extra = {"gated": channels, "flow": 2}.get(cfg.output, 0)  # a gate per channel, or (dy, dx)
        self.head = nn.Conv2d(width, channels + extra, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # r = 0: the untrained model is exactly copy-last
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_config(cls, cfg: ModelConfig | dict) -> EncoderForecaster:
        d = asdict(cfg) if isinstance(cfg, ModelConfig) else dict(cfg)
        return cls(**d)

    @property
    def stride(self) -> int:
        """Total down-sampling: H and W must be multiples of it."""
        return self.cfg.stem_stride * 2 ** (len(self.cfg.hidden_channels) - 1)

    def state_shapes(self, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """[B, C, H, W] of each level's h and c for frames of height × width."""
        s = self.cfg.stem_stride
        return [(batch, c, height // (s * 2**i), width // (s * 2**i)) for i, c in enumerate(self.cfg.hidden_channels)]

    def check_frames(self, frames: Tensor) -> None:
        c = self.cfg.in_channels
        if frames.dim() != 5 or frames.shape[2] != c:
            raise ValueError(f"EncoderForecaster expected frames [B, T, {c}, H, W], got {list(frames.shape)}")
        h, w = frames.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(
                f"EncoderForecaster needs H and W divisible by its stride {self.stride}, got {h}×{w}"
            )

    def initial_state(self, frames: Tensor, state: StreamState | None) -> StreamState:
        """Zeros for a missing or empty state; otherwise check the given one fits the frames."""
        b, _, _, h, w = frames.shape
        shapes = self.state_shapes(b, h, w)
        if state is None or not state.initialized:
            # Each level's zeros come from its cell: dtype and memory layout as the cell returns them.
            return StreamState([cell.zero_state(frames, hl, wl) for cell, (_, _, hl, wl) in zip(self.encoder, shapes)])
        state.check(shapes)
        return state

    def encode(self, frames: Tensor, state: StreamState | None = None, every_step: bool = False):
        """Run the encoder over frames [B, T, C, H, W].

        Returns:
            The state after the last frame and, if `every_step`, the per-level (h, c) after every
            frame as lists of T tensors [B, C_l, H_l, W_l] (for one-step-ahead prediction at each frame;
            lists, so that taking some steps needs no slice, whose backward would zero-fill a
            batch-major gradient and cost the convolutions their channels-last layout).
        """
        self.check_frames(frames)
        state = self.initial_state(frames, state)
        x = per_frame(self.stem, frames)
        final, steps = [], []
        for level, (down, cell) in enumerate(zip(self.down, self.encoder)):
            x = per_frame(down, x) if level else x
            x, hc, hcs = self.scan(cell, x, state[level], every_step)
            final.append(hc)
            steps.append(hcs)
        return StreamState(final), (steps if every_step else None)

    @staticmethod
    def scan(cell: ConvLSTM, x: Tensor, hc, keep_cells: bool):
        """cell over x; with keep_cells also the cell state after every step."""
        if not keep_cells:
            out, hc = cell(x, hc)
            return out, hc, None
        hs, cs, hc = cell.run_steps(cell.gate_steps(x), hc)
        return stack_steps(hs), hc, (hs, cs)

    def forecast(self, state: StreamState, last_frame: Tensor, horizon: int) -> Tensor:
        """Unroll the forecaster `horizon` steps from encoder `state`; last_frame [B, C, H, W]."""
        y = None
        for level in reversed(range(len(self.forecaster))):
            y, _ = self.forecaster[level](y, state[level], steps=horizon)
            y = per_frame(self.up[level], y)
        return self.output(y, last_frame)

    def output(self, y: Tensor, last_frame: Tensor) -> Tensor:
        """Frames in [0, 1] from head features y [B, K, S, H, W] and the last frame x_t [B, C, H, W]."""
        dtype = torch.promote_types(y.dtype, torch.float32)  # bf16 → fp32 outputs, fp64 stays fp64
        if self.refine is None:
            logits = per_frame(self.head, y).to(dtype)
            if self.cfg.skip_last_frame:
                logits = logits + torch.logit(last_frame.to(dtype).clamp(1e-3, 1 - 1e-3)).unsqueeze(1)
            return torch.sigmoid(logits)
        x = last_frame.unsqueeze(1).expand(-1, y.shape[1], -1, -1, -1)
        r = per_frame(self.head, per_frame(self.refine, torch.cat([y, x.to(y.dtype)], dim=2))).to(dtype)
        if self.cfg.output == "gated":
            change, gate = r.chunk(2, dim=2)
            r = torch.sigmoid(gate) * change
        elif self.cfg.output == "flow":
            flow, r = r[:, :, :2], r[:, :, 2:]
            r = r + shift(x.flatten(0, 1), flow.flatten(0, 1)).unflatten(0, x.shape[:2])  # (dy, dx) in pixels
        return clamp_unit(x.to(dtype) + r)

    def forward(self, frames: Tensor, state: StreamState | None = None, horizon: int | None = None,
                every_step: bool = False):
        """Encode frames from `state`, forecast the next frames.

        Args:
            frames: [B, T, C, H, W] in [0, 1].
            state: the encoder state from the previous chunk of the same lanes, or None.
            horizon: frames to forecast (default: the configured horizon).
            every_step: also predict each of frames 1 … T−1 from the frames before it (a dense
                training target: every step of the chunk is supervised, as streaming uses them).

        Returns:
            (prediction, encoder StreamState after frames[:, -1]). The prediction, float32 in [0, 1],
            is [B, horizon, C, H, W], or with `every_step` [B, T − 1 + horizon, C, H, W]: frames 1 … T−1
            one step ahead, then the forecast of frames T … T+horizon−1.
        """
        horizon = horizon or self.cfg.horizon
        if not every_step:
            state, _ = self.encode(frames, state)
            return self.forecast(state, frames[:, -1], horizon), state
        b, t = frames.shape[:2]
        final, steps = self.encode(frames, state, every_step=True)
        end = self.forecast(final, frames[:, -1], horizon)
        if t == 1:
            return end, final
        starts = StreamState([(torch.cat(h[:-1]), torch.cat(c[:-1])) for h, c in steps])  # time-major
        one = batch_major(self.forecast(starts, time_major(frames[:, :-1]), 1), b, t - 1)[:, :, 0]
        return torch.cat([one, end], dim=1), final

    def predict_each_step(self, frames: Tensor, state: StreamState | None = None, horizon: int = 1):
        """For every input frame t, forecast frames t+1 … t+horizon (streaming prediction).

        The encoder states after every frame are stacked along the batch, so the forecaster runs once
        for all B·T starting points.

        Returns:
            (prediction [B, T, horizon, C, H, W], encoder StreamState after the last frame).
        """
        b, t = frames.shape[:2]
        final, steps = self.encode(frames, state, every_step=True)
        starts = StreamState([(torch.cat(h), torch.cat(c)) for h, c in steps])  # time-major
        pred = self.forecast(starts, time_major(frames), horizon)
        return batch_major(pred, b, t), final


class EveryStep(nn.Module):
    """The model called with ``every_step=True``: ``net(frames, state)`` → (dense prediction, state).

    Training with a dense loss wraps the model in this, so DDP and torch.compile see a plain
    two-argument module.
    """

    def __init__(self, model: EncoderForecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor, state: StreamState | None = None):
        return self.model(frames, state, every_step=True)
