"""Memory that pays: the occlusion generator's ground truth, `convlstm eval`'s modes against
independent computations, and a tiny memory task that a carried state learns and a stateless model
cannot."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from convlstm_cli import checkpoint, config
from convlstm_cli.cli import app
from convlstm_cli.compare import evaluate_folder
from convlstm_cli.data.occlusion import (
    GLIMPSE,
    VISIBLE,
    make_occlusion,
    memory_frames,
    memory_pixels,
    render_occlusion,
)
from convlstm_cli.data.reveal import memory_pixels as reveal_pixels
from convlstm_cli.data.reveal import render_reveal
from convlstm_cli.data.video import read_frames
from convlstm_cli.model.forecaster import EncoderForecaster
from convlstm_cli.model.state import StreamState
from convlstm_cli.step import make_optimizer, train_step


def test_occlusion_ground_truth_matches_its_pixels():
    rng = np.random.default_rng(1)
    video, visible = render_occlusion(rng, 150, 64, hidden=16, margin=0, balls=1)
    # Independent reading of the pixels: the ball is the only thing brighter than the occluder.
    bright = (video > 120).reshape(len(video), -1).sum(1)
    in_view = visible[:, 0] >= VISIBLE
    assert in_view.any() and (~in_view).any()  # it hides and comes back
    assert (bright[in_view] > 0).all() and (bright[visible[:, 0] == 0] == 0).all()
    runs, n = [], 0
    for v in in_view:  # lengths of the stretches the ball spends out of view
        n = 0 if v else n + 1
        runs.append(n)
    assert max(runs) >= 12  # hidden for longer than a chunk of 8
    memory = memory_frames(visible, 8)
    shows = visible[:, 0] >= GLIMPSE
    assert (bright[~shows] < 3).all()  # what the flags call not showing is (nearly) no ball pixel
    for t in np.flatnonzero(memory):  # showing now, in at most one of the last 8, in full view before
        assert shows[t] and shows[max(0, t - 8) : t].sum() < 2 and in_view[: max(0, t - 8)].any()
    # Each time the ball comes back after longer than the window, its first two sliver frames are
    # flagged and no later frame: by then a window has seen it come out.
    back = [t for t in range(9, len(shows)) if shows[t] and not shows[t - 8 : t].any() and in_view[: t - 8].any()]
    assert back and sorted(np.flatnonzero(memory)) == sorted({t + k for t in back for k in (0, 1)})


def test_occlusion_noise_is_a_cameras_and_moves_nothing():
    clean, vis_clean = render_occlusion(np.random.default_rng(3), 60, 32, hidden=10, margin=0)
    noisy, vis_noisy = render_occlusion(np.random.default_rng(3), 60, 32, hidden=10, margin=0, noise=2.0)
    assert np.array_equal(vis_clean, vis_noisy)  # same balls, same bars
    diff = noisy.astype(np.float64) - clean
    # 2 grey levels; the mean moves by less than the clean frame's rounding (20.4 is written 20)
    assert 1.7 < diff.std() < 2.3 and abs(diff.mean()) < 0.5
    # Clean frames repeat exactly while nothing is in view (copy-last at the PSNR cap); noisy never.
    assert (np.abs(np.diff(noisy.astype(int), axis=0)).sum((1, 2)) > 0).all()


def test_make_data_writes_ground_truth_beside_each_video(tmp_path):
    r = CliRunner().invoke(app, ["make-data", str(tmp_path / "occ"), "--scene", "occlusion", "--num", "2",
                                 "--frames", "40", "--hidden", "14"])
    assert r.exit_code == 0, r.output
    for i in range(2):
        meta = json.loads((tmp_path / "occ" / f"occlusion_{i:04d}.json").read_text())
        frames = read_frames(tmp_path / "occ" / f"occlusion_{i:04d}.mp4", None, 1)
        assert len(meta["memory"]) == len(meta["visible"]) == len(frames) == 40 and meta["hidden"] == 14


def test_memory_pixels_are_the_returning_balls(tmp_path):
    make_occlusion(tmp_path, num=1, frames=80, size=32, hidden=10, window=4, noise=0.0)
    meta = json.loads((tmp_path / "occlusion_0000.json").read_text())
    video, _ = render_occlusion(np.random.default_rng(meta["seed"]), 80, 32, 10, 0)  # renders again, same clip
    frames = read_frames(tmp_path / "occlusion_0000.mp4", None, 1)[:, 0]
    assert np.abs(frames.astype(int) - video).mean() < 1.5  # the same clip (lossless H.264, gray ↔ YUV rounding)
    mask, memory = memory_pixels(meta), np.asarray(meta["memory"])
    assert memory.any() and mask[memory].any(axis=(1, 2)).all() and not mask[~memory].any()
    # Where the mask is, a ball shows: neither the background (20) nor the bar in front (89).
    assert ((video[mask] != 20) & (video[mask] != 89)).all()


def _reveal_flags_from_pixels(video: np.ndarray, window: int) -> np.ndarray:
    """Independent reading of a clean reveal clip: a column is covered where every pixel is the bar's
    grey (89); it needs memory where it shows after `window` covered frames, having shown before."""
    covered = (video == 89).all(axis=1)  # [T, columns]
    shows = ~covered
    out = np.zeros(covered.shape, bool)
    for t in range(window + 1, len(video)):
        for c in range(video.shape[2]):
            out[t, c] = shows[t, c] and covered[t - window : t, c].all() and shows[: t - window, c].any()
    return out


def test_reveal_ground_truth_matches_its_pixels():
    video, visible = render_reveal(np.random.default_rng(4), 120, 48, hidden=16)
    full, hidden = visible == 1, visible == 0
    assert full.any() and hidden.any() and ((visible > 0) & (visible < 1)).any()
    assert (video.transpose(0, 2, 1)[hidden] == 89).all()  # covered columns are the bar's grey
    # Columns in full view are the still background: the same pixels whenever they show.
    for c in range(48):
        seen = video[full[:, c], :, c]
        assert (seen == seen[0]).all()
    # Partly covered columns blend the bar and what is behind it by the visible share.
    t, c = map(int, np.argwhere((visible > 0) & (visible < 1))[0])
    behind = video[np.flatnonzero(full[:, c])[0], :, c].astype(np.float64)
    blend = behind * visible[t, c] + 0.35 * 255 * (1 - visible[t, c])
    assert np.abs(video[t, :, c] - blend).max() <= 1.0
    # The memory flags: columns the bar uncovers after hiding them for longer than the window.
    mask = reveal_pixels({"visible": visible.tolist(), "window": 8, "size": 48})
    flags = _reveal_flags_from_pixels(video, 8)
    assert flags.any() and np.array_equal(mask[:, 0, :], flags) and (mask == mask[:, :1, :]).all()
    assert flags.any(axis=1).sum() < len(video) - 20  # ordinary frames too


def test_make_data_reveal_writes_ground_truth_beside_each_video(tmp_path):
    r = CliRunner().invoke(app, ["make-data", str(tmp_path / "rev"), "--scene", "reveal", "--num", "2",
                                 "--frames", "60", "--hidden", "14", "--noise", "0"])
    assert r.exit_code == 0, r.output
    for i in range(2):
        meta = json.loads((tmp_path / "rev" / f"reveal_{i:04d}.json").read_text())
        frames = read_frames(tmp_path / "rev" / f"reveal_{i:04d}.mp4", None, 1)[:, 0]
        video, _ = render_reveal(np.random.default_rng(meta["seed"]), 60, 64, 14)
        assert np.abs(frames.astype(int) - video).mean() < 1.5  # the clip (lossless H.264, gray ↔ YUV)
        flags = _reveal_flags_from_pixels(video, 8).any(axis=1)
        assert meta["hidden"] == 14 and len(meta["visible"]) == 60 and meta["memory"] == flags.tolist()
    before = (tmp_path / "rev" / "reveal_0000.mp4").read_bytes()
    (tmp_path / "rev" / "occlusion_0000.mp4").touch()  # so that the occlusion scene meets one too
    for scene in ("reveal", "occlusion"):  # a second run refuses to overwrite, leaves the videos be
        r = CliRunner().invoke(app, ["make-data", str(tmp_path / "rev"), "--scene", scene, "--num", "1"])
        assert r.exit_code == 2 and "already exists; use --force" in r.output and "Traceback" not in r.output
    assert (tmp_path / "rev" / "reveal_0000.mp4").read_bytes() == before
    r = CliRunner().invoke(app, ["make-data", str(tmp_path / "bad"), "--scene", "reveal", "--hidden", "0"])
    assert r.exit_code == 2 and "hidden >= 1" in r.output and not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.manual_seed(0)
    cfg = config.load_config(None, ["model.hidden_channels=4,6", "model.stem_channels=4", "data.size=32",
                                    "data.context=4", "model.horizon=1"])
    model = EncoderForecaster.from_config(cfg.model)
    with torch.no_grad():
        model.head.weight.normal_(std=0.3)
    root = tmp_path_factory.mktemp("run")
    checkpoint.save(root / "checkpoints" / "last.pt", {"model": model.state_dict(), "config": config.to_dict(cfg)})
    data = root / "occ"
    make_occlusion(data, num=2, frames=30, size=32, hidden=10, window=4)
    return root, data, checkpoint.load_model(root).model


def _frames(path):
    return torch.from_numpy(read_frames(path, (32, 32), 1, resize="crop")).float() / 255


def test_eval_modes_agree_with_independent_computations(tiny_run):
    root, data, model = tiny_run
    report = evaluate_folder(root, data, window=3, precision="fp32", chunk=7)
    from convlstm_cli.metrics import MetricAccumulator

    want = {m: MetricAccumulator() for m in ("stateful", "window", "reset", "copy-last")}
    masks = []
    for path in sorted(data.glob("*.mp4")):
        x = _frames(path)
        t = len(x)
        with torch.no_grad():
            one_pass, _ = model.predict_each_step(x[None], None, 1)  # stateful = one pass over the video
            window = torch.stack([model(x[None, max(0, i - 2) : i + 1], None, 1)[0][0, 0] for i in range(t - 1)])
            reset = torch.cat([model.predict_each_step(c[None], None, 1)[0][0, :, 0] for c in x.split(4)])
        want["stateful"].update(one_pass[0, : t - 1, 0], x[1:])
        want["window"].update(window, x[1:])
        want["reset"].update(reset[: t - 1], x[1:])
        want["copy-last"].update(x[:-1], x[1:])
        masks.append(np.asarray(json.loads(path.with_suffix(".json").read_text())["memory"])[1:])
    for mode, acc in want.items():
        assert report["modes"][mode]["all"]["psnr"] == pytest.approx(acc.means()["psnr"], abs=2e-3), mode
        assert report["modes"][mode]["all"]["frames"] == len(acc)
    mem = np.concatenate(masks)
    assert report["memory_frames"] == mem.sum() > 0
    psnr = np.array(want["stateful"].values["psnr"])
    assert report["modes"]["stateful"]["memory"]["psnr"] == pytest.approx(psnr[mem].mean(), abs=2e-3)
    assert report["modes"]["stateful"]["ordinary"]["psnr"] == pytest.approx(psnr[~mem].mean(), abs=2e-3)


def test_eval_command_and_predict_stateless_window(tiny_run, tmp_path):
    root, data, _ = tiny_run
    wide = CliRunner(env={"COLUMNS": "220"})
    r = wide.invoke(app, ["eval", str(root), str(data), "--json", str(tmp_path / "e.json"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "stateless window of W=4 frames" in text and "need memory" in text and "copy last frame" in text
    out = tmp_path / "p"
    r = wide.invoke(app, ["predict", str(next(data.glob("*.mp4"))), "-c", str(root), "--out", str(out),
                                 "--stateless-window", "3", "--no-video", "--no-gif", "--no-png", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["window"]["window"] == 3 and metrics["window"]["psnr"] != metrics["model"]["psnr"]
    assert "stateless window" in " ".join(r.output.split())


def test_memory_split_script_agrees_with_eval(tiny_run):
    """scripts/memory_split.py's groups, pooled, give `convlstm eval`'s streamed and window figures."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "memory_split.py"
    spec = importlib.util.spec_from_file_location("memory_split", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root, data, _ = tiny_run
    report = evaluate_folder(root, data, window=3, precision="fp32", chunk=7)["modes"]
    run = checkpoint.load_model(root)
    groups = {g: [] for g in script.GROUPS}
    for video in sorted(data.glob("*.mp4")):
        for g, pairs in script.split(video, run, run, 3).items():
            groups[g] += pairs
    assert len(groups["first frames"]) == 2 * 3 and groups["memory"] and groups["other ordinary"]
    pooled = {"memory": np.asarray(groups["memory"]),
              "ordinary": np.asarray(groups["first frames"] + groups["other ordinary"])}
    for kind, pairs in pooled.items():
        assert pairs[:, 0].mean() == pytest.approx(report["stateful"][kind]["psnr"], abs=2e-3), kind
        assert pairs[:, 1].mean() == pytest.approx(report["window"][kind]["psnr"], abs=2e-3), kind
        assert len(pairs) == report["stateful"][kind]["frames"]


# -- a memory task small enough to train in seconds -----------------------------------------------


def flash_task(batch: int, context: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A flash at frame 0 decides the brightness of frame 2·context; the frames between are all gray.

    Returns (frames [B, 2·context + 1, 1, 8, 8], the flash's brightness [B]).
    """
    level = torch.where(torch.rand(batch, generator=gen) < 0.5, 0.2, 0.9)
    x = torch.full((batch, 2 * context + 1, 1, 8, 8), 0.5)
    x[:, 0] = level.view(-1, 1, 1, 1)
    x[:, -1] = level.view(-1, 1, 1, 1)
    return x, level


def train_flash(stateful: bool, context: int = 4, steps: int = 150) -> float:
    """Train on the flash task, two chunks per step; return the brightness error at frame 2·context."""
    torch.manual_seed(0)
    model = EncoderForecaster(1, (8,), 3, horizon=1, stem_channels=8, stem_stride=2)
    opt, fused = make_optimizer(model.parameters(), torch.device("cpu"), lr=1e-2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, _ = flash_task(16, context, gen)
        # Chunk 1: frames 0…c−1 → frame c; chunk 2: frames c…2c−1 → frame 2c (the square).
        chunks = [(x[:, :context], x[:, context : context + 1], None),
                  (x[:, context : 2 * context], x[:, 2 * context :], None)]
        start = None if stateful else (lambda inputs, reset, state: StreamState())
        train_step(model, opt, chunks, StreamState(), params=list(model.parameters()), fused=fused,
                   amp=contextlib.nullcontext, start=start)
    x, level = flash_task(64, context, torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, state = model(x[:, :context])
        pred, _ = model(x[:, context : 2 * context], None if not stateful else state)
    return float((pred[:, 0].mean(dim=(1, 2, 3)) - level).abs().mean())


def test_a_carried_state_learns_what_a_stateless_model_cannot():
    stateful, stateless = train_flash(True), train_flash(False)
    # Stateless, frames c…2c−1 are all alike: the best it can do is the mean, 0.35 off either way.
    assert stateless > 0.25
    assert stateful < 0.1 and stateful < stateless / 3, (stateful, stateless)
