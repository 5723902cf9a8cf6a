"""Data beyond video files: frame folders and arrays, in the layouts the field uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from convlstm_cli import checkpoint, config
from convlstm_cli.cli import app
from convlstm_cli.data import sources
from convlstm_cli.data.streamer import ClipStreamer
from convlstm_cli.data.synthetic import shapes_frames
from convlstm_cli.data.video import VideoWriter, read_frames
from convlstm_cli.model.forecaster import EncoderForecaster

TINY = ["model.hidden_channels=8,8", "model.stem_channels=8", "model.horizon=2", "data.size=32", "data.context=4",
        "data.batch_size=2", "data.workers=1", "train.tensorboard=false"]


def sets(*extra: str) -> list[str]:
    return [a for s in (*TINY, *extra) for a in ("--set", s)]


@pytest.fixture(autouse=True)
def default_array_options():
    sources.configure()
    yield
    sources.configure()


def moving_mnist_like(path: Path, sequences: int = 24) -> Path:
    """uint8 [20, N, 64, 64]: time first, as Moving MNIST's mnist_test_seq.npy."""
    rng = np.random.default_rng(0)
    clips = np.stack([shapes_frames(rng, 20, 64, 1)[..., 0] for _ in range(sequences)])  # [N, T, H, W]
    np.save(path, np.ascontiguousarray(clips.transpose(1, 0, 2, 3)))
    return path


def test_moving_mnist_layout_trains_and_predicts(tmp_path):
    data = moving_mnist_like(tmp_path / "mnist_test_seq.npy")
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(data), "--out", str(run), "--max-steps", "3", *sets()])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "layout TNHW detected: Moving MNIST's" in text and "24 sequences of 20 frames" in text
    out = tmp_path / "pred"
    r = CliRunner().invoke(app, ["predict", f"{data}#5", "-c", str(run), "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    pred = np.load(out / "prediction.npy")
    metrics = json.loads((out / "metrics.json").read_text())
    assert pred.shape == (19, 1, 32, 32) and pred.dtype == np.uint8 and metrics["scored_frames"] == 19
    assert metrics["model"]["mse_sum"] == pytest.approx(metrics["model"]["mse"] * 32 * 32)  # OpenSTL's sum


def _write_pngs(folder: Path, frames: np.ndarray, names=None) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / (names[i] if names else f"frame{i}.png"))
    return folder


def test_a_frame_folder_gives_the_same_batches_as_a_lossless_video(tmp_path):
    frames = shapes_frames(np.random.default_rng(1), 24, 32, 1)[..., 0]
    folder = _write_pngs(tmp_path / "frames", frames)
    video = tmp_path / "same.mkv"
    with VideoWriter(video, 10, codec="ffv1", pix_fmt="gray") as w:  # lossless
        for f in frames:
            w.write(f)
    assert np.array_equal(read_frames(video, None, 1)[:, 0], frames)
    make = lambda src: ClipStreamer([str(src)], batch_size=1, context=4, horizon=2, size=(32, 32), workers=1,  # noqa: E731
                                    loop=False, shuffle=False)
    for a, b in zip(make(folder), make(video)):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    names = sorted((p.name for p in folder.iterdir()), key=sources.natural_key)
    assert names[:3] == ["frame0.png", "frame1.png", "frame2.png"] and names[10] == "frame10.png"


def test_float_ranges_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    radar = rng.uniform(-5, 75, (3, 12, 32, 32)).astype(np.float32)  # dBZ, partly outside [0, 70]
    path = tmp_path / "radar.npy"
    np.save(path, radar)
    cfg = config.load_config(None, TINY + ["data.range=[0,70]", "model.horizon=1"])
    sources.configure(cfg.data.layout, cfg.data.range)
    levels = read_frames(f"{path}#1", None, 1)[:, 0]
    np.testing.assert_array_equal(levels, np.rint(np.clip(radar[1], 0, 70) / 70 * 255).astype(np.uint8))
    model = EncoderForecaster.from_config(cfg.model)  # untrained: exactly copy-last
    run = tmp_path / "run"
    checkpoint.save(run / "checkpoints" / "last.pt", {"model": model.state_dict(), "config": config.to_dict(cfg)})
    r = CliRunner().invoke(app, ["predict", f"{path}#1", "-c", str(run), "--out", str(tmp_path / "p"), "--device", "cpu",
                                 "--precision", "fp32", "--no-video", "--no-gif", "--no-png"])
    assert r.exit_code == 0, r.output
    pred = np.load(tmp_path / "p" / "prediction.npy")
    assert pred.dtype == np.float32 and pred.shape == (11, 1, 32, 32)
    # Copy-last in the array's own units: frame t, clipped to the range, to within half a level.
    np.testing.assert_allclose(pred[:, 0], np.clip(radar[1, :-1], 0, 70), atol=70 / 255 / 2 + 1e-4)


def test_broken_sources_are_one_line_each(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, 16, 16), dtype=np.uint8)
    gap = _write_pngs(tmp_path / "gap", frames, ["f001.png", "f002.png", "f004.png", "f005.png"])
    mixed = _write_pngs(tmp_path / "mixed", frames[:2])
    from PIL import Image

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(mixed / "frame9.png")
    nan = rng.uniform(0, 1, (2, 8, 16, 16)).astype(np.float32)
    nan[1, 3, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "bool.npy", np.zeros((2, 8, 16, 16), bool))
    np.save(tmp_path / "four_d.npy", np.zeros((2, 8, 16, 16), np.uint8))
    cases = {
        str(gap): ["frame 3 is missing (after f002.png)"],
        str(mixed): ["mixed frame sizes: frame0.png is 16x16, frame9.png is 20x20"],
        f"{tmp_path / 'nan.npy'}#1": ["holds NaN or infinity", "--range", "0,1"],
        str(tmp_path / "bool.npy"): ["dtype bool is not numeric"],
        str(tmp_path / "four_d.npy"): ["data.layout NTCHW has 5 axes, the array has 4", "--layout", "NTCHW"],
    }
    for source, (reason, *options) in cases.items():
        r = CliRunner().invoke(app, ["probe", source, *options])
        assert r.exit_code == 2, (source, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0] and "Traceback" not in r.output, (source, r.stderr)


def test_array_streams_resume_exactly_and_are_cached(tmp_path, monkeypatch):
    data = moving_mnist_like(tmp_path / "seq.npy", sequences=22)
    from convlstm_cli.data.probe import probe_videos

    videos = probe_videos(data).videos
    make = lambda: ClipStreamer(videos, batch_size=3, context=4, horizon=2, size=(32, 32), seed=1, workers=1,  # noqa: E731
                                cache_dir=str(tmp_path / "cache"), resize="crop", random_crop=True)
    first = make()
    want = [b for _, b in zip(range(40), first)]  # more than one epoch: later plays come from the cache
    first.close()
    again = make()
    it = iter(again)
    for _ in range(15):
        next(it)
    state = again.state_dict()
    again.close()
    import convlstm_cli.data.prefetch as prefetch

    monkeypatch.setattr(prefetch, "iter_frames", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    resumed = make()
    resumed.load_state_dict(state)
    for w, g in zip(want[15:], resumed):  # every sequence is in the cache by now: nothing is read again
        assert torch.equal(w.inputs, g.inputs) and torch.equal(w.targets, g.targets)
    resumed.close()
