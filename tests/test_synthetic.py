"""Built-in sample data: deterministic bouncing shapes, frame-index videos, `convlstm make-data`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from convlstm_cli.cli import app
from convlstm_cli.data.probe import probe_videos
from convlstm_cli.data.synthetic import decode_index, index_frames, make_dataset, shapes_frames
from convlstm_cli.data.video import LOSSLESS, read_frames, write_video
from convlstm_cli.errors import InputError

runner = CliRunner()


def test_same_seed_same_pixels_other_seed_other_pixels(tmp_path):
    a = make_dataset(tmp_path / "a", num=2, frames=12, size=32, seed=5)
    b = make_dataset(tmp_path / "b", num=2, frames=12, size=32, seed=5)
    c = make_dataset(tmp_path / "c", num=2, frames=12, size=32, seed=6)
    assert [p.name for p in a] == ["shapes_0000.mp4", "shapes_0001.mp4"]
    decoded = [[read_frames(p, None, 1) for p in run] for run in (a, b, c)]
    assert all(np.array_equal(x, y) for x, y in zip(decoded[0], decoded[1], strict=True))
    assert not np.array_equal(decoded[0][0], decoded[2][0])
    assert not np.array_equal(decoded[0][0], decoded[0][1])  # each video of a run differs too


def test_same_seed_same_pixels_every_time(tmp_path):
    """make-data gives the same pixels for a seed, every generation: libx264 at crf 10 decoded to
    3–5 different clips in 8 encodes of the same frames (so two generations of one training set
    differed), hence lossless encoding of generated scenes."""
    from convlstm_cli.data.occlusion import make_occlusion, render_occlusion

    runs = []
    for run in ("a", "b", "c"):
        runs.append(make_dataset(tmp_path / run, num=2, frames=30, size=64, seed=5)
                    + make_occlusion(tmp_path / run, num=2, frames=30, size=64, seed=5, hidden=8))
    decoded = [[read_frames(p, None, 1) for p in paths] for paths in runs]
    for other in decoded[1:]:
        assert all(np.array_equal(x, y) for x, y in zip(decoded[0], other, strict=True))
    clip, _ = render_occlusion(np.random.default_rng(0), 120, 64, 16, 0, noise=2.0)
    again = [read_frames(write_video(tmp_path / f"w{i}.mp4", clip, crf=LOSSLESS), None, 1) for i in range(8)]
    assert all(np.array_equal(a, again[0]) for a in again)
    assert np.abs(again[0][:, 0].astype(int) - clip).max() <= 1  # lossless up to the gray ↔ YUV rounding


def test_files_have_the_requested_shape_and_stay_close_to_the_render(tmp_path):
    paths = make_dataset(tmp_path, num=3, frames=20, size=48, seed=1)
    infos = probe_videos(tmp_path).videos
    assert [(i.frames, i.height, i.width, i.fps) for i in infos] == [(20, 48, 48, 10.0)] * 3
    render = shapes_frames(np.random.default_rng([1, 0]), 20, 48, 1)[..., 0].astype(int)
    decoded = read_frames(paths[0], None, 1)[:, 0].astype(int)
    assert np.abs(decoded - render).mean() < 1.5  # crf 10: the motion survives encoding


def test_shapes_move_bounce_and_vary():
    rng = np.random.default_rng(0)
    for _ in range(4):
        clip = shapes_frames(rng, 200, 32, 1)[..., 0].astype(int)
        assert np.abs(np.diff(clip, axis=0)).mean(axis=(1, 2)).min() > 0  # something moves every frame
        assert len(np.unique(clip[0])) > 3  # background and shapes of several brightnesses/edges
        # In 200 frames every shape would have left a 32-pixel box many times over; bouncing keeps
        # them in (occlusion may hide part of the total brightness, never most of it).
        mass = (clip - clip[0].min()).clip(0).sum(axis=(1, 2))
        assert mass.min() > 0.4 * mass.max()


def test_colour_videos_have_colour(tmp_path):
    path = make_dataset(tmp_path, num=1, frames=6, size=32, channels=3, seed=2)[0]
    frames = read_frames(path, None, 3).astype(int)
    assert frames.shape == (6, 3, 32, 32)
    assert np.abs(frames - frames.mean(axis=1, keepdims=True)).max() > 40  # channels differ


def test_refuses_to_overwrite_and_leaves_other_files_alone(tmp_path):
    (tmp_path / "mine.mp4").write_bytes(b"user data")
    make_dataset(tmp_path, num=1, frames=4, size=16)
    with pytest.raises(InputError, match="shapes_0000.mp4 already exists"):
        make_dataset(tmp_path, num=2, frames=4, size=16)
    assert not (tmp_path / "shapes_0001.mp4").exists()  # refused before writing anything
    make_dataset(tmp_path, num=2, frames=4, size=16, overwrite=True)
    assert (tmp_path / "mine.mp4").read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.mp4", "shapes_0000.mp4", "shapes_0001.mp4"]


def test_index_frames_survive_compression_and_resizing(tmp_path):
    frames = index_frames(300, (48, 64), channels=3, first=1000)
    assert list(decode_index(frames.transpose(0, 3, 1, 2))) == list(range(1000, 1300))
    path = write_video(tmp_path / "lossy.mp4", frames, crf=35)  # far lossier than the helper's qp 0
    assert list(decode_index(read_frames(path, (12, 16), 1))) == list(range(1000, 1300))


def test_make_data_cli(tmp_path):
    out = tmp_path / "data"
    result = runner.invoke(app, ["make-data", str(out), "--num", "2", "--frames", "5", "--size", "16", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "shapes_0001.mp4" in result.output and "wrote 2 shapes videos" in result.output
    assert [Path(v.path).name for v in probe_videos(out).videos] == ["shapes_0000.mp4", "shapes_0001.mp4"]
    again = runner.invoke(app, ["make-data", str(out), "--num", "2"])
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    assert "Traceback" not in again.output
    forced = runner.invoke(app, ["make-data", str(out), "--num", "1", "--frames", "7", "--force", "--channels", "3"])
    assert forced.exit_code == 0 and probe_videos(out / "shapes_0000.mp4").videos[0].frames == 7
    bad = runner.invoke(app, ["make-data", str(out), "--channels", "2"])
    assert bad.exit_code == 2 and "--channels 2" in bad.output
