"""Deploying a stateful model: ONNX and TorchScript exports with the state as inputs and outputs,
equal to `stream_predict` chunk by chunk, with a dynamic batch and their metadata."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from convlstm_cli import checkpoint, config
from convlstm_cli.cli import app
from convlstm_cli.data.synthetic import shapes_frames
from convlstm_cli.data.video import write_video
from convlstm_cli.model.forecaster import EncoderForecaster

HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="the [export] extra (onnx, onnxruntime, onnxscript) is not installed")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def save_run(root: Path, *overrides: str) -> Path:
    torch.manual_seed(0)
    cfg = config.load_config(None, ["model.hidden_channels=8,8", "model.stem_channels=8", "data.size=32",
                                    "model.horizon=2", *overrides])
    model = EncoderForecaster.from_config(cfg.model)
    with torch.no_grad():
        model.head.weight.normal_(std=0.3)  # predictions that depend on the state
        for layer in [*model.encoder, *model.forecaster]:
            if layer.conv_flow is not None:  # an advected state that moves
                layer.conv_flow.weight.normal_(std=0.3)
    checkpoint.save(root / "checkpoints" / "last.pt", {"model": model.state_dict(), "config": config.to_dict(cfg),
                                                       "step": 3})
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = shapes_frames(np.random.default_rng(1), 30, 48, 3)  # another size and colour: converted as trained
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=10, crf=10)


@pytest.fixture(scope="module")
def exports(run_dir, tmp_path_factory):
    from convlstm_cli.export import export_model

    out = tmp_path_factory.mktemp("exports")
    made = {"torchscript": (out / "m.pt", export_model(run_dir, "torchscript", out / "m.pt", chunk=4))}
    if HAVE_ONNX:
        made["onnx"] = (out / "m.onnx", export_model(run_dir, "onnx", out / "m.onnx", chunk=4))
    return made


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs_onnx)])
@pytest.mark.parametrize("batch", [1, 3])
def test_exported_model_streams_like_pytorch(exports, run_dir, clip, fmt, batch):
    from convlstm_cli.export import verify

    path, _ = exports[fmt]
    r = verify(path, fmt, run_dir, clip, chunks=3, batch=batch)  # state fed back over 3 chunks
    assert r["frames"] == 12 and r["batch"] == batch
    assert r["max_abs_diff"] < 1e-5, r  # fp32 tolerance


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs_onnx)])
def test_an_advected_state_exports_and_streams_like_pytorch(tmp_path, clip, fmt):
    from convlstm_cli.export import export_model, verify

    run = save_run(tmp_path / "run", "model.advect=true")  # the state warped by grid_sample each step
    path = tmp_path / f"m.{fmt}"
    export_model(run, fmt, path, chunk=4)
    r = verify(path, fmt, run, clip, chunks=3, batch=2)
    assert r["frames"] == 12 and r["max_abs_diff"] < 1e-5, r


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs_onnx)])
def test_metadata_round_trips(exports, fmt):
    from convlstm_cli.export import ExportedRunner

    path, meta = exports[fmt]
    got = ExportedRunner(path, fmt).meta
    assert got == meta
    assert got["state_shapes"] == [[8, 16, 16], [8, 8, 8]] and got["frame_size"] == [32, 32]
    assert got["inputs"] == ["frames", "state_h0", "state_c0", "state_h1", "state_c1"]
    assert got["config"]["model"]["hidden_channels"] == [8, 8] and got["chunk"] == 4 and got["horizon"] == 2


@needs_onnx
def test_onnx_batch_and_frame_size_are_dynamic(exports, run_dir):
    from convlstm_cli.export import ExportedRunner, StreamStep

    model = checkpoint.load_model(run_dir).model.float().to(memory_format=torch.contiguous_format)
    x = torch.rand(5, 4, 1, 48, 64)  # batch 5, 48×64: neither was the example's
    runner = ExportedRunner(exports["onnx"][0], "onnx")
    got = runner(x.numpy())
    state = [torch.zeros(s) for s in model.state_shapes(5, 48, 64) for _ in range(2)]
    with torch.no_grad():
        want = StreamStep(model, 2)(x, *state)[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


@needs_onnx
def test_readme_example_needs_only_onnxruntime_numpy_and_pyav(exports, clip, tmp_path):
    """examples/onnx_stream.py with torch and convlstm_cli made unimportable."""
    from convlstm_cli.export import export_model

    onnx_path = tmp_path / "m8.onnx"
    export_model(exports["onnx"][1]["checkpoint"], "onnx", onnx_path, chunk=8)
    blocked = ("import sys, runpy\nsys.modules['torch'] = None\nsys.modules['convlstm_cli'] = None\n"
               f"sys.argv = ['x', {str(onnx_path)!r}, {str(clip)!r}]\nrunpy.run_path({str(EXAMPLES / 'onnx_stream.py')!r})")
    r = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "24 frames streamed in chunks of 8" in r.stdout


def test_bad_export_requests_are_one_line(run_dir, tmp_path, monkeypatch):
    def one_line(*args):
        r = CliRunner().invoke(app, ["export", *args])
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.output
        return lines[0]

    assert "no checkpoints/best.pt" in one_line(str(tmp_path), "--format", "torchscript", "--out", str(tmp_path / "x"))
    assert "expected onnx or torchscript" in one_line(str(run_dir), "--format", "tflite", "--out", str(tmp_path / "x"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    line = one_line(str(run_dir), "--format", "onnx", "--out", str(tmp_path / "x.onnx"))
    assert "pip install 'convlstm-cli[export]'" in line and not (tmp_path / "x.onnx").exists()


def test_readme_shows_the_example_that_runs():
    """The README's onnxruntime example is examples/onnx_stream.py (which the test above runs)."""
    example = (EXAMPLES / "onnx_stream.py").read_text()
    readme = (EXAMPLES.parent / "README.md").read_text()
    body = example[example.index("import json"):]
    assert f"```python\n{body}```" in readme
