"""`convlstm predict`: outputs that decode, metrics equal to an independent computation, chunking that
changes nothing, constant memory on a long clip, and one-line errors (exit 2) that leave no files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_metrics import ssim_reference
from typer.testing import CliRunner

from convlstm_cli import checkpoint, config
from convlstm_cli.cli import app
from convlstm_cli.data.synthetic import shapes_frames
from convlstm_cli.data.video import read_frames, write_video
from convlstm_cli.model.forecaster import EncoderForecaster
from convlstm_cli.predict import predict_clip
from convlstm_cli.predict.streaming import stream_predict

SIZE, HORIZON, FRAMES = 32, 3, 30
PANEL = 128  # 32-pixel frames are enlarged ×4 to 128-pixel panels
VIDEO_HW = (14 + PANEL, 3 * PANEL + 2 * 4)  # label strip + panel; three panels and two 4-pixel gaps


def tiny_config():
    return config.load_config(None, [
        "model.hidden_channels=8,8", "model.stem_channels=8", f"data.size={SIZE}", f"model.horizon={HORIZON}",
    ])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with a tiny model whose predictions differ clearly from copy-last."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = EncoderForecaster.from_config(cfg.model)
    torch.nn.init.normal_(model.head.weight, std=1.0)  # far from the copy-last initialisation
    root = tmp_path_factory.mktemp("run")
    checkpoint.save(root / "checkpoints" / "last.pt",
                    {"model": model.state_dict(), "config": config.to_dict(cfg), "step": 7})
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 30-frame 32x32 gray clip of moving shapes (the model's own size: no conversion)."""
    path = tmp_path_factory.mktemp("clips") / "shapes.mp4"
    return write_video(path, shapes_frames(np.random.default_rng(1), FRAMES, SIZE, 1), fps=8, crf=10)


def model_of(run_dir: Path) -> EncoderForecaster:
    return checkpoint.load_model(run_dir).model


def decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def np_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, list[float]]:
    """Per-frame metrics in float64 numpy (SSIM from the direct formula in test_metrics)."""
    err = pred.astype(np.float64) - truth.astype(np.float64)
    m = (err**2).reshape(len(err), -1).mean(1)
    return {"mse": m, "mae": np.abs(err).reshape(len(err), -1).mean(1), "psnr": 10 * np.log10(1 / m),
            "ssim": np.array([ssim_reference(p, t) for p, t in zip(pred, truth, strict=True)])}


def check_block(block: dict, want: dict[str, np.ndarray]) -> None:
    for k, v in want.items():
        np.testing.assert_allclose(block["per_frame"][k], v, rtol=2e-4, atol=2e-6, err_msg=k)
        assert block[k] == pytest.approx(float(np.mean(v)), rel=2e-4, abs=2e-6), k


def test_stream_outputs_and_metrics(run_dir, clip, tmp_path):
    out = tmp_path / "out"
    result = predict_clip(clip, run_dir, out, device="cpu", precision="fp32", chunk=7, gif_max_frames=10)
    assert sorted(p.name for p in out.iterdir()) == ["forecast.png", "metrics.json", "prediction.gif",
                                                     "prediction.mp4"]
    video, gif = decode(out / "prediction.mp4"), decode(out / "prediction.gif")
    assert len(video) == FRAMES - 1 and video[0].shape[:2] == VIDEO_HW  # one frame per scored frame t+1
    assert len(gif) == 10 and gif[0].shape[:2] == VIDEO_HW  # capped, and the output says so
    assert any("first 10 of 29 frames" in note for note in result.notes)
    png = decode(out / "forecast.png")
    assert len(png) == 1 and png[0].shape[1] > HORIZON * PANEL

    # Independent computation: decode the whole clip, one model pass, numpy metrics.
    frames = read_frames(clip, (SIZE, SIZE), 1).astype(np.float32) / 255  # [T, 1, H, W]
    with torch.no_grad():
        pred, _ = model_of(run_dir).predict_each_step(torch.from_numpy(frames)[None], horizon=HORIZON)
    pred = pred[0].numpy()  # [T, K, C, H, W]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "stream" and metrics["frames"] == FRAMES and metrics["checkpoint_step"] == 7
    assert metrics["frame_index"] == list(range(1, FRAMES))
    check_block(metrics["model"], np_metrics(pred[:-1, 0], frames[1:]))
    check_block(metrics["baseline"], np_metrics(frames[:-1], frames[1:]))
    m, b = np.array(metrics["model"]["per_frame"]["mse"]), np.array(metrics["baseline"]["per_frame"]["mse"])
    assert np.abs(m / b - 1).mean() > 0.05  # the model is not the baseline: the check tells them apart
    for step in metrics["by_step"]:  # lead k: frames t → t+k
        k = step["step"]
        want = np_metrics(pred[: FRAMES - k, k - 1], frames[k:])
        assert step["frames"] == FRAMES - k
        assert step["model"]["psnr"] == pytest.approx(want["psnr"].mean(), rel=2e-4)
        assert step["model"]["ssim"] == pytest.approx(want["ssim"].mean(), rel=2e-4)
    assert result.to_dict()["model"] == metrics["model"]

    # The video's panels hold truth t+1 and the model's prediction (lossy H.264: loose tolerance).
    t = 12
    truth_panel = video[t][14 : 14 + PANEL : 4, 0:PANEL:4, 0].astype(np.float32)
    pred_panel = video[t][14 : 14 + PANEL : 4, PANEL + 4 : 2 * PANEL + 4 : 4, 0].astype(np.float32)
    assert np.abs(truth_panel - frames[t + 1, 0] * 255).mean() < 3
    assert np.abs(truth_panel - frames[t + 1, 0] * 255).mean() < np.abs(truth_panel - frames[t, 0] * 255).mean()
    assert np.abs(pred_panel - pred[t, 0, 0] * 255).mean() < 3


def test_chunked_streaming_equals_one_pass(run_dir):
    model = model_of(run_dir)
    frames = shapes_frames(np.random.default_rng(2), 23, SIZE, 1).transpose(0, 3, 1, 2)  # uint8 [T, 1, H, W]
    x = torch.from_numpy(frames).float().div(255)
    with torch.no_grad():
        whole, _ = model.predict_each_step(x[None], horizon=HORIZON)
    for chunk in (1, 5, 23, 100):
        chunks = list(stream_predict(model, iter(frames), HORIZON, chunk))
        assert [c.start for c in chunks] == list(range(0, 23, chunk))[: len(chunks)]
        got = torch.cat([c.pred for c in chunks])
        torch.testing.assert_close(got, whole[0], atol=2e-6, rtol=1e-5)
        for c in chunks:  # each chunk carries the frames after it that it needs as ground truth
            np.testing.assert_array_equal(c.frames_u8, frames[c.start : c.start + c.n + HORIZON])


def test_compiled_streaming_equals_eager(run_dir):
    # compile=True runs full chunks through torch.compile (a last, shorter chunk eagerly): the same
    # predictions and the same carried state as the eager stream.
    model = model_of(run_dir)
    frames = shapes_frames(np.random.default_rng(4), 11, SIZE, 1).transpose(0, 3, 1, 2)
    from torch._dynamo.utils import counters

    eager = list(stream_predict(model, iter(frames), HORIZON, chunk=4))
    counters.clear()
    try:
        compiled = list(stream_predict(model, iter(frames), HORIZON, chunk=4, compile=True))
    finally:
        torch._dynamo.reset()
    assert counters["stats"]["unique_graphs"] == 2  # from a zero state, and with a carried one
    assert [c.start for c in compiled] == [c.start for c in eager] == [0, 4, 8]
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a.pred, b.pred, atol=1e-5, rtol=1e-5)


def test_stream_reads_only_a_chunk_ahead(run_dir):
    """Decoding stays at most chunk + horizon frames ahead of the model: memory is O(chunk)."""
    yielded = []

    def source():
        for i, f in enumerate(shapes_frames(np.random.default_rng(3), 50, SIZE, 1).transpose(0, 3, 1, 2)):
            yielded.append(i)
            yield f

    for c in stream_predict(model_of(run_dir), source(), HORIZON, chunk=8):
        assert len(yielded) <= c.start + c.n + HORIZON


def test_forecast_past_the_end(run_dir, clip, tmp_path):
    out, n, k = tmp_path / "fc", FRAMES - 2, 5
    result = predict_clip(clip, run_dir / "checkpoints" / "last.pt", out, context=n, horizon=k, device="cpu",
                          precision="fp32", chunk=4)
    assert result.unscored == [FRAMES, FRAMES + 1, FRAMES + 2]
    assert any("no ground truth" in note for note in result.notes)
    video = decode(out / "prediction.mp4")
    assert len(video) == k and video[0].shape[:2] == VIDEO_HW
    assert len(decode(out / "prediction.gif")) == k
    frames = read_frames(clip, (SIZE, SIZE), 1).astype(np.float32) / 255
    with torch.no_grad():
        pred, _ = model_of(run_dir)(torch.from_numpy(frames[:n])[None], horizon=k)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "forecast" and metrics["frame_index"] == [n, n + 1]
    assert metrics["unscored_frames"] == [FRAMES, FRAMES + 1, FRAMES + 2]
    check_block(metrics["model"], np_metrics(pred[0, :2].numpy(), frames[n:]))
    check_block(metrics["baseline"], np_metrics(np.repeat(frames[n - 1 : n], 2, 0), frames[n:]))
    # Past the end the truth panel is a placeholder, not a frame: it differs from the last truth panel.
    assert np.abs(video[4][20:PANEL, :PANEL].astype(int) - video[1][20:PANEL, :PANEL]).mean() > 1


def test_cli_converts_size_and_colour_and_says_so(run_dir, tmp_path):
    colour = write_video(tmp_path / "colour.mp4", shapes_frames(np.random.default_rng(4), 8, 48, 3), fps=10, crf=10)
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["predict", str(colour), "-c", str(run_dir), "--out", str(out), "--device", "cpu",
                                   "--no-video", "--no-gif", "--no-png"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "resized to the model's 32x32" in text and "converted to grayscale" in text
    assert "copy-last baseline" in text and "PSNR" in text and "SSIM" in text
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scored_frames"] == 7 and len(metrics["notes"]) == 2


def test_predict_clip_accepts_a_loaded_model(run_dir, clip):
    loaded = checkpoint.load_model(run_dir)
    result = predict_clip(clip, loaded, None, device="cpu", precision="fp32", max_frames=10, horizon=1)
    assert result.frames == 10 and len(result.model) == 9 and result.outputs == {}


def test_bf16_where_supported_stays_close_to_fp32(run_dir, clip):
    from convlstm_cli.device import bf16_supported

    kw = dict(device="cpu", max_frames=12, horizon=2)
    fp32 = predict_clip(clip, run_dir, None, precision="fp32", **kw)
    bf16 = predict_clip(clip, run_dir, None, precision="bf16", **kw)
    assert bf16.precision == ("bf16" if bf16_supported("cpu") else "fp32")
    assert bf16.model.means()["psnr"] == pytest.approx(fp32.model.means()["psnr"], abs=0.3)
    assert bf16.baseline.means() == fp32.baseline.means()  # the baseline never touches the model


def test_bf16_without_native_support_is_a_note(run_dir, clip, monkeypatch):
    import convlstm_cli.device as dev
    from convlstm_cli.compare import evaluate_folder

    monkeypatch.setattr(dev, "bf16_supported", lambda device: False)
    kw = dict(device="cpu", max_frames=8, horizon=1)
    result = predict_clip(clip, run_dir, None, precision="bf16", **kw)
    assert result.precision == "fp32"
    assert [n for n in result.notes if "no native bf16: ran in fp32" in n], result.notes
    assert not [n for n in predict_clip(clip, run_dir, None, precision="auto", **kw).notes if "bf16" in n]
    report = evaluate_folder(run_dir, clip.parent, precision="bf16", modes=("stateful",), chunk=7)
    assert report["precision"] == "fp32" and report["notes"] and "no native bf16" in report["notes"][0]


def _bad_inputs(tmp: Path, clip: Path, run_dir: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "text.mp4").write_text("not a video")
    one = write_video(tmp / "one.mp4", shapes_frames(np.random.default_rng(5), 1, SIZE, 1), fps=10)
    (tmp / "junk.pt").write_bytes(b"\x00junk" * 10)
    torch.save({"weights": torch.zeros(2)}, tmp / "foreign.pt")
    c = ["-c", str(run_dir)]
    return {
        "missing": ([str(tmp / "nope.mp4"), *c], "no such file"),
        "unreadable": ([str(tmp / "text.mp4"), *c], "not a readable video"),
        "too short": ([str(one), *c], "too short"),
        "context too long": ([str(clip), *c, "--context", "99"], "too short"),
        "not a checkpoint": ([str(clip), "-c", str(tmp / "junk.pt")], "not a convlstm-cli checkpoint"),
        "foreign checkpoint": ([str(clip), "-c", str(tmp / "foreign.pt")], "not a convlstm-cli checkpoint"),
        "no checkpoint": ([str(clip), "-c", str(tmp / "nothing")], "no such checkpoint"),
        "bad horizon": ([str(clip), *c, "--horizon", "0"], "--horizon"),
    }


def test_bad_inputs_exit_2_without_outputs(run_dir, clip, tmp_path):
    for name, (args, message) in _bad_inputs(tmp_path, clip, run_dir).items():
        out = tmp_path / f"out-{name}"
        res = CliRunner().invoke(app, ["predict", *args, "--out", str(out), "--device", "cpu"])
        assert res.exit_code == 2, (name, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (name, res.stderr)
        assert "Traceback" not in res.output and not out.exists(), name


def test_failure_mid_stream_leaves_no_partial_files(run_dir, clip, tmp_path, monkeypatch):
    import convlstm_cli.predict.run as predict_mod
    from convlstm_cli.errors import VideoError

    real = predict_mod.stream_predict

    def breaks(*args, **kwargs):
        for i, c in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise VideoError("clip", "stream broke")
            yield c

    monkeypatch.setattr(predict_mod, "stream_predict", breaks)
    out = tmp_path / "existing"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # a previous run's result stays as it was
    with pytest.raises(VideoError):
        predict_clip(clip, run_dir, out, device="cpu", precision="fp32", chunk=4)
    assert [p.name for p in out.iterdir()] == ["metrics.json"] and (out / "metrics.json").read_text() == "{}"
    with pytest.raises(VideoError):
        predict_clip(clip, run_dir, tmp_path / "new", device="cpu", precision="fp32", chunk=4)
    assert not (tmp_path / "new").exists()


def test_memory_is_flat_on_a_long_clip(run_dir, tmp_path):
    """Peak RSS after 1,500 frames is within a few MB of the peak after 300 (all outputs on).

    Holding the rendered frames would add ~65 MB, holding the predictions and truths ~20 MB.
    """
    frames = shapes_frames(np.random.default_rng(6), 1500, SIZE, 1)
    long = write_video(tmp_path / "long.mp4", frames, fps=25, crf=23)
    short = write_video(tmp_path / "short.mp4", frames[:300], fps=25, crf=23)
    script = textwrap.dedent(f"""
        import resource, torch
        torch.set_num_threads(1)
        from convlstm_cli.predict import predict_clip
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        run = lambda clip, out, **kw: predict_clip(clip, {str(run_dir)!r}, out, device="cpu", precision="fp32",
                                                   gif_max_frames=50, **kw)
        run({str(short)!r}, {str(tmp_path / "warm")!r}, max_frames=50)  # libraries and allocator warm up
        run({str(short)!r}, {str(tmp_path / "short")!r})
        a = peak()
        r = run({str(long)!r}, {str(tmp_path / "long")!r})
        print(a, peak(), r.frames, len(r.model))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    short_peak, long_peak, frames_read, scored = res.stdout.split()
    assert (int(frames_read), int(scored)) == (1500, 1499)
    assert float(long_peak) - float(short_peak) < 12, res.stdout
    assert len(decode(tmp_path / "long" / "prediction.mp4")) == 1499


def test_readme_streaming_api(run_dir, clip):
    # The README's "Python API" streaming example, with the top-level imports it shows.
    from convlstm_cli import load_model
    from convlstm_cli import stream_predict as top_level_stream_predict
    from convlstm_cli.data.video import iter_frames

    loaded = load_model(run_dir, device="cpu")
    d = loaded.config.data
    frames = iter_frames(clip, size=d.hw(), channels=d.channels, resize=d.resize)
    chunks = list(top_level_stream_predict(loaded.model, frames, horizon=2, chunk=7))
    assert [c.start for c in chunks] == list(range(0, FRAMES, 7))
    whole = torch.from_numpy(np.stack(list(iter_frames(clip, size=d.hw(), resize=d.resize)))).float() / 255
    with torch.inference_mode():
        want, _ = loaded.model.predict_each_step(whole[None], None, 2)
    torch.testing.assert_close(torch.cat([c.pred for c in chunks]), want[0], atol=1e-5, rtol=1e-5)


def test_model_loads_in_the_layout_it_was_trained_in(run_dir, tmp_path):
    cl = checkpoint.load_model(run_dir)
    assert cl.config.train.channels_last
    w = cl.model.encoder[0].conv_h.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    payload = checkpoint.load(checkpoint.find(run_dir))
    payload["config"]["train"]["channels_last"] = False
    checkpoint.save(tmp_path / "checkpoints" / "last.pt", payload)
    plain = checkpoint.load_model(tmp_path)
    assert plain.model.encoder[0].conv_h.weight.is_contiguous()
    x = torch.rand(2, 4, 1, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(cl.model(x)[0], plain.model(x)[0], atol=1e-5, rtol=1e-5)
