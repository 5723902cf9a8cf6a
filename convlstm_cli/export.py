"""`convlstm export`: a trained model as ONNX or TorchScript, its recurrent state as explicit inputs and outputs.

A stateful model deploys only if its state crosses the interface, as recurrent matting models pass
theirs. The exported module is one streaming step over a chunk of N frames:

    inputs:  frames [B, N, C, H, W] in [0, 1],  state_h0, state_c0, state_h1, state_c1, …
    outputs: pred [B, N, K, C, H, W] (frame t's forecast of t+1 … t+K, as `predict_each_step`),
             next_h0, next_c0, next_h1, next_c1, …

**Zero-state convention.** A stream starts with zeros for every state input, of the shapes in the
metadata (``state_shapes``, with the batch size and the frame size filled in: level l is
[B, C_l, H / s_l, W / s_l]); each chunk's ``next_*`` outputs are the next chunk's ``state_*`` inputs.
A lane whose stream restarts gets zeros again in its rows.

The batch is dynamic; so are H and W (as multiples of the model's stride) in ONNX. The file carries
its metadata (ONNX ``metadata_props``, TorchScript ``_extra_files["metadata.json"]``): the run's
config, frame size, channels, horizon, chunk, precision (fp32), the resize rule and the state shapes.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from convlstm_cli.errors import InputError
from convlstm_cli.model.state import StreamState

FORMATS = ("onnx", "torchscript")
EXPORT_MODULES = ("onnx", "onnxruntime", "onnxscript")  # the [export] extra


class StreamStep(nn.Module):
    """`EncoderForecaster.predict_each_step` with the state flattened into tensors (h0, c0, h1, c1, …)."""

    def __init__(self, model: nn.Module, horizon: int) -> None:
        super().__init__()
        self.model, self.horizon = model, horizon

    def forward(self, frames: Tensor, *state: Tensor):
        levels = StreamState([(state[2 * i], state[2 * i + 1]) for i in range(len(state) // 2)])
        pred, new = self.model.predict_each_step(frames, levels, self.horizon)
        return (pred, *[t for hc in new for t in hc])


def state_names(levels: int, prefix: str) -> list[str]:
    return [f"{prefix}_{k}{i}" for i in range(levels) for k in "hc"]


def metadata(loaded, chunk: int, horizon: int) -> dict:
    from convlstm_cli.config import to_dict

    cfg, model = loaded.config, loaded.model
    h, w = cfg.data.hw()
    return {
        "format": "convlstm-cli/export/v1", "chunk": chunk, "horizon": horizon, "precision": "fp32",
        "frame_size": [h, w], "channels": cfg.data.channels, "resize": cfg.data.resize, "stride": model.stride,
        "state_shapes": [list(s[1:]) for s in model.state_shapes(1, h, w)],  # per level [C, H, W] at frame_size
        "inputs": ["frames", *state_names(len(model.cfg.hidden_channels), "state")],
        "outputs": ["pred", *state_names(len(model.cfg.hidden_channels), "next")],
        "checkpoint": str(loaded.path), "step": loaded.step, "config": to_dict(cfg),
    }


def example_inputs(model, batch: int, chunk: int, h: int, w: int, channels: int) -> tuple[Tensor, ...]:
    frames = torch.rand(batch, chunk, channels, h, w)
    return (frames, *[torch.zeros(s) for s in model.state_shapes(batch, h, w) for _ in range(2)])


def export_onnx(step: StreamStep, inputs, meta: dict, out: Path) -> None:
    """ONNX through torch.export (batch dynamic; H and W dynamic as multiples of the stride)."""
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    hs, ws = torch.export.Dim("h", min=1, max=512), torch.export.Dim("w", min=1, max=512)
    stride, levels = meta["stride"], len(meta["state_shapes"])
    first = stride // 2 ** (levels - 1)  # the stem's stride: level l is H / (first · 2^l)
    frames_spec = {0: batch, 3: stride * hs, 4: stride * ws}
    state_spec = tuple({0: batch, 2: (stride // (first * 2**i)) * hs, 3: (stride // (first * 2**i)) * ws}
                       for i in range(levels) for _ in "hc")
    torch.onnx.export(step, inputs, str(out), dynamo=True, input_names=meta["inputs"], output_names=meta["outputs"],
                      dynamic_shapes=(frames_spec, state_spec), opset_version=18, verbose=False)
    proto = onnx.load(str(out))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(out))


def export_torchscript(step: StreamStep, inputs, meta: dict, out: Path) -> None:
    """TorchScript by tracing (the batch stays dynamic: sizes are read from the inputs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the model's shape checks run once, at trace time
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace(step, inputs, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"metadata.json": json.dumps(meta)})


def export_model(checkpoint, fmt: str, out, chunk: int = 1, horizon: int | None = None) -> dict:
    """Export a run's model (see the module docstring); returns the metadata written into the file.

    Raises:
        InputError: an unknown format, a missing extra (onnx, onnxruntime, onnxscript), a bad checkpoint.
    """
    from convlstm_cli.atomic import Staged
    from convlstm_cli.checkpoint import load_model

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: expected onnx or torchscript")
    if chunk < 1 or (horizon is not None and horizon < 1):
        raise InputError("--chunk and --horizon must be at least 1")
    if fmt == "onnx":
        require_onnx()
    loaded = load_model(checkpoint, "cpu")
    loaded.model.float().to(memory_format=torch.contiguous_format).eval()
    horizon = horizon or loaded.config.model.horizon
    meta = metadata(loaded, chunk, horizon)
    h, w = meta["frame_size"]
    step = StreamStep(loaded.model, horizon).eval()
    inputs = example_inputs(loaded.model, 2, chunk, h, w, meta["channels"])
    out = Path(out)
    with Staged(out) as staged, torch.no_grad():
        (export_onnx if fmt == "onnx" else export_torchscript)(step, inputs, meta, staged.tmp)
    return meta


def missing_modules() -> list[str]:
    """The modules of the [export] extra that are not installed."""
    return [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]


def require_onnx() -> None:
    missing = missing_modules()
    if missing:
        raise InputError(f"ONNX export needs {', '.join(missing)}: pip install 'convlstm-cli[export]'")


# -- running an exported file, chunk by chunk ------------------------------------------------------


class ExportedRunner:
    """Runs an exported file on frames [B, N, C, H, W] with the state fed back (zeros at the start)."""

    def __init__(self, path, fmt: str) -> None:
        self.fmt, path = fmt, str(path)
        if fmt == "onnx":
            import onnx
            import onnxruntime as ort

            self.meta = {p.key: json.loads(p.value) for p in onnx.load(path, load_external_data=False).metadata_props}
            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        else:
            import warnings

            extra = {"metadata.json": ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; ONNX is the way forward
                self.module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
            self.meta = json.loads(extra["metadata.json"])
        self.state: list[np.ndarray] | None = None

    def zero_state(self, batch: int, h: int, w: int) -> list[np.ndarray]:
        fh, fw = self.meta["frame_size"]
        return [np.zeros((batch, c, sh * h // fh, sw * w // fw), np.float32)
                for c, sh, sw in self.meta["state_shapes"] for _ in "hc"]

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Predictions [B, N, K, C, H, W] for frames [B, N, C, H, W] (float32 in [0, 1])."""
        if self.state is None:
            self.state = self.zero_state(frames.shape[0], *frames.shape[-2:])
        if self.fmt == "onnx":
            feed = dict(zip(self.meta["inputs"], [frames.astype(np.float32), *self.state]))
            pred, *self.state = self.session.run(self.meta["outputs"], feed)
            return pred
        with torch.no_grad():
            pred, *state = self.module(torch.from_numpy(frames.astype(np.float32)), *map(torch.from_numpy, self.state))
        self.state = [t.numpy() for t in state]
        return pred.numpy()


def verify(path, fmt: str, checkpoint, clip, chunks: int = 3, batch: int = 1) -> dict:
    """Stream `clip` through the exported file chunk by chunk (batch lanes of the same clip), against
    `stream_predict` of the checkpoint's model in fp32; the largest difference and the time per frame."""
    from convlstm_cli.checkpoint import load_model
    from convlstm_cli.data.video import read_frames
    from convlstm_cli.predict.streaming import stream_predict

    runner = ExportedRunner(path, fmt)
    meta = runner.meta
    loaded = load_model(checkpoint, "cpu")
    d, n = loaded.config.data, meta["chunk"]
    frames = read_frames(clip, d.hw(), d.channels, d.stride, count=n * chunks, resize=d.resize)
    if len(frames) < n * chunks:
        raise InputError(f"{clip}: {len(frames)} frames, verifying {chunks} chunks of {n} needs {n * chunks}")
    want = torch.cat([c.pred for c in stream_predict(loaded.model, iter(frames), meta["horizon"], n)])
    x = np.repeat((frames.astype(np.float32) / 255)[None], batch, axis=0)
    t0, got = time.perf_counter(), []
    for k in range(chunks):
        got.append(runner(x[:, k * n : (k + 1) * n]))
    seconds = time.perf_counter() - t0
    got = np.concatenate(got, axis=1)
    return {"max_abs_diff": float(np.abs(got - want.numpy()[None]).max()), "frames": n * chunks, "batch": batch,
            "ms_per_frame": seconds / (n * chunks) * 1e3}
