"""Hardening: a regular (wheel) install, clips with odd timestamps, fuzzed input that never shows a
traceback, resuming with the original command, and a probe cache shared by concurrent runs."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from convlstm_cli.cli import app
from convlstm_cli.data.synthetic import shapes_frames
from convlstm_cli.data.video import write_video

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "model.hidden_channels=8,8", "--set", "model.stem_channels=8", "--set", "data.size=32",
        "--set", "data.context=4", "--set", "model.horizon=2", "--set", "data.workers=1",
        "--set", "train.tensorboard=false", "--set", "data.batch_size=2"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- a regular install ---------------------------------------------------------------------------


def test_wheel_install_runs_sample_configs_from_anywhere(tmp_path):
    """Build a wheel, install it into a fresh target (no checkout on the path), train from elsewhere."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "convlstm_cli", src / "convlstm_cli", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("convlstm_cli-*.whl"))
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "CONVLSTM_CACHE_DIR": "off"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    where = run("-c", "import convlstm_cli, sys; print(convlstm_cli.__file__)")
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    configs = run("-c", "from convlstm_cli.config import load_config\n"
                        "print([load_config(n).model.horizon for n in ('quickstart', 'default', 'gpu')])")
    assert configs.stdout.strip() == "[3, 5, 10]", configs.stderr
    assert run("-m", "convlstm_cli", "make-data", "videos", "--num", "3", "--frames", "24").returncode == 0
    trained = run("-m", "convlstm_cli", "train", "videos", "--config", "quickstart", "--max-steps", "1",
                  "--out", "run", "--set", "train.tensorboard=false")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert (work / "run" / "checkpoints" / "last.pt").is_file()


# -- clips with odd timestamps -------------------------------------------------------------------


def _timed_clip(path: Path, n: int, time_base: Fraction, pts) -> Path:
    """An H.264 clip whose frame i has presentation time pts(i) · time_base (VFR, fast, 240 fps)."""
    frames = shapes_frames(np.random.default_rng(len(path.name)), n, 32, 3)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=Fraction(1) / time_base)
        st.width = st.height = 32
        st.pix_fmt = "yuv420p"
        st.codec_context.time_base = time_base
        for i, image in enumerate(frames):
            f = av.VideoFrame.from_ndarray(image, format="rgb24")
            f.pts, f.time_base = int(pts(i)), time_base
            c.mux(st.encode(f))
        c.mux(st.encode(None))
    return path


def _raw_h264(path: Path, n: int) -> Path:
    """A raw H.264 elementary stream: no container, no timestamps, no declared rate."""
    with av.open(str(path), "w", format="h264") as c:
        st = c.add_stream("libx264", rate=25)
        st.width = st.height = 32
        st.pix_fmt = "yuv420p"
        for i, image in enumerate(shapes_frames(np.random.default_rng(9), n, 32, 3)):
            f = av.VideoFrame.from_ndarray(image, format="rgb24")
            f.pts = i
            c.mux(st.encode(f))
        c.mux(st.encode(None))
    return path


@pytest.fixture(scope="module")
def odd_clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("odd")
    gaps = np.cumsum(np.random.default_rng(1).integers(20, 70, 40))  # 20-70 ms apart: a phone's VFR
    return {
        "vfr": _timed_clip(root / "phone_vfr.mp4", 40, Fraction(1, 1000), lambda i: gaps[i]),
        "fast": _timed_clip(root / "fast_timestamps.mp4", 40, Fraction(1, 90000), lambda i: 30 * i),  # 3000/s
        "240": _timed_clip(root / "highspeed_240.mp4", 40, Fraction(1, 240), lambda i: i),
        "norate": _raw_h264(root / "camera.h264", 40),
    }


def _rate(path: Path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return float(s.average_rate or s.guessed_rate)


def test_clips_with_odd_timestamps_train_and_predict(odd_clips, tmp_path):
    folder = next(iter(odd_clips.values())).parent
    run = tmp_path / "run"
    r = invoke("train", str(folder), "--out", str(run), "--max-steps", "2", *TINY)
    assert r.exit_code == 0, r.output
    assert "training on 4 videos (4 for validation)" in " ".join(r.output.split()) and "skipped" not in r.output
    for kind, clip in odd_clips.items():
        out = tmp_path / kind
        r = invoke("predict", str(clip), "-c", str(run), "--out", str(out), "--device", "cpu")
        assert r.exit_code == 0, (kind, r.output)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["scored_frames"] == 39, kind
        gif, mp4 = _rate(out / "prediction.gif"), _rate(out / "prediction.mp4")
        assert 1 <= gif <= 50 and 1 <= mp4 <= 240, (kind, gif, mp4)
        notes = " ".join(metrics["notes"])
        if kind in ("fast", "240"):  # clamped, and said so
            assert "outside what a GIF holds" in notes, (kind, notes)
            assert gif == 50
        if kind == "fast":
            assert "outside what a video holds" in notes and mp4 == 240
        if kind == "240":
            assert mp4 == pytest.approx(240)
        if kind == "vfr":
            assert 14 < mp4 < 30 and "outside" not in notes  # the average rate, kept
        if kind == "norate":
            assert "declares no frame rate" in notes and mp4 == 25


# -- fuzzed input: exit codes and no traceback ---------------------------------------------------


def _encode(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, src_fmt: str) -> Path:
    with av.open(str(path), "w") as c:
        st = c.add_stream(codec, rate=10)
        st.height, st.width = frames.shape[1:3]
        st.pix_fmt = pix_fmt
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format=src_fmt)
            vf.pts = i
            c.mux(st.encode(vf))
        c.mux(st.encode(None))
    return path


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    for ext in (".mp4", ".mkv", ".webm"):
        (root / f"random{ext}").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    good = write_video(root / "good.mp4", shapes_frames(rng, 30, 32, 1), fps=10)
    data = good.read_bytes()
    for pct in range(10, 100, 10):
        (root / f"cut{pct:02d}.mp4").write_bytes(data[: len(data) * pct // 100])
    (root / "clip.mp4").mkdir()
    (root / "unreadable.mp4").write_bytes(data)
    os.chmod(root / "unreadable.mp4", 0)
    os.symlink("loop_b.mp4", root / "loop_a.mp4")
    os.symlink("loop_a.mp4", root / "loop_b.mp4")
    _encode(root / "one_pixel.mkv", rng.integers(0, 256, (20, 1, 1, 3), dtype=np.uint8), "ffv1", "bgr0", "rgb24")
    uhd = np.zeros((2, 2160, 3840, 3), np.uint8)
    uhd[:, 900:1300, 1700:2100] = 255
    write_video(root / "uhd_4k.mp4", uhd, fps=10)
    rgba = np.zeros((20, 32, 32, 4), np.uint8)
    rgba[..., 3] = 100
    rgba[:, 8:24, 8:24, :3] = 255
    _encode(root / "alpha.mov", rgba, "png", "rgba", "rgba")
    _encode(root / "gray16.mkv", rng.integers(0, 65536, (20, 32, 32), dtype=np.uint16), "ffv1", "gray16le",
            "gray16le")
    return root


@pytest.fixture
def unreadable(monkeypatch, fuzz_dir):
    """chmod 000 does not stop root: deny that one file the way the OS would for anyone else."""
    path = fuzz_dir / "unreadable.mp4"
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == path else real(p, mode, *a, **k))
    return path


def test_fuzzed_inputs_never_show_a_traceback(fuzz_dir, unreadable, tmp_path):
    r = invoke("probe", str(fuzz_dir))
    assert r.exit_code == 0 and "Traceback" not in r.output
    reasons = {line.split(":")[0].split("/")[-1]: line for line in r.output.splitlines() if "skipped " in line}
    assert "symbolic link loop" in reasons["loop_a.mp4"] and "permission denied" in reasons["unreadable.mp4"]
    assert all(f"cut{p:02d}.mp4" in reasons for p in range(10, 100, 10))
    run = tmp_path / "run"
    r = invoke("train", str(fuzz_dir), "--out", str(run), "--max-steps", "2", *TINY)
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    codes = {}
    for path in sorted(fuzz_dir.iterdir()):
        r = invoke("predict", str(path), "-c", str(run), "--out", str(tmp_path / f"p-{path.name}"), "--device", "cpu")
        codes[path.name] = r.exit_code
        if r.exit_code == 2:
            assert one_line_error(r, 2).startswith(f"error: {path}"), path.name
            assert not (tmp_path / f"p-{path.name}").exists()  # nothing half-written
        else:
            assert r.exit_code == 0 and "Traceback" not in r.output, (path.name, r.output)
    assert {n for n, c in codes.items() if c == 0} == {"good.mp4", "one_pixel.mkv", "uhd_4k.mp4", "alpha.mov",
                                                       "gray16.mkv"}
    bad_only = tmp_path / "bad_only"
    bad_only.mkdir()
    for name in ("random.mp4", "cut50.mp4"):
        shutil.copy(fuzz_dir / name, bad_only)
    os.symlink("x.mp4", bad_only / "y.mp4")
    os.symlink("y.mp4", bad_only / "x.mp4")
    line = one_line_error(invoke("train", str(bad_only), "--out", str(tmp_path / "r2"), *TINY), 2)
    assert "no usable video" in line and not (tmp_path / "r2" / "checkpoints").exists()


def test_unexpected_errors_are_one_line_with_exit_1(fuzz_dir, monkeypatch):
    import convlstm_cli.data.probe as probe_mod

    def boom(*a, **k):
        raise RuntimeError("something nobody expected\nwith a second line")

    monkeypatch.setattr(probe_mod, "probe_videos", boom)
    line = one_line_error(invoke("probe", str(fuzz_dir / "good.mp4")), 1)
    assert line == ("internal error: RuntimeError: something nobody expected with a second line "
                    "(CONVLSTM_DEBUG=1 shows the traceback)")
    monkeypatch.setenv("CONVLSTM_DEBUG", "1")
    r = invoke("probe", str(fuzz_dir / "good.mp4"))
    assert r.exit_code != 0 and isinstance(r.exception, RuntimeError)


def test_console_entry_point_keeps_its_promises(fuzz_dir):
    """Through `python -m convlstm_cli` (the installed entry point): exit 2 and 1, one line each."""
    cmd = [sys.executable, "-m", "convlstm_cli", "probe", str(fuzz_dir / "random.mp4")]
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a readable video" in bad.stderr
    usage = subprocess.run([*cmd[:3], "predict", "--bogus"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1  # click words the reason by version:
    assert "No such option" in usage.stderr and "--bogus" in usage.stderr  # 'No such option: --bogus' …
    crash = "import sys, convlstm_cli.cli as c\nc.app = lambda **kw: 1 / 0\nsys.argv = ['convlstm']\nc.main()"
    r = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "internal error: ZeroDivisionError: division by zero (CONVLSTM_DEBUG=1 shows the traceback)"


# -- resume as users type it ---------------------------------------------------------------------


def test_resume_accepts_the_original_command(tmp_path):
    from convlstm_cli.data.synthetic import make_dataset

    videos = make_dataset(tmp_path / "v", num=3, frames=24, size=32)[0].parent
    run = tmp_path / "run"
    original = ["train", str(videos), "--config", "quickstart", "--out", str(run), "--set", "data.size=32",
                "--set", "train.tensorboard=false", "--set", "data.batch_size=2"]
    assert invoke(*original, "--max-steps", "1").exit_code == 0
    r = invoke(*original[:4], *original[6:], "--max-steps", "2", "--resume", str(run))  # without --out: same run
    assert r.exit_code == 0, r.output
    assert "resumed" in r.output
    line = one_line_error(invoke(*original[:3], "default", *original[6:], "--max-steps", "3", "--resume", str(run)), 2)
    assert "differs from the resumed run's config" in line and "train.lr: run 0.003, default 0.002" in line
    assert "--set train.lr=0.002" in line and "model.horizon" in line and "cannot change on resume" in line
    line = one_line_error(invoke("train", str(videos), "--resume", str(run), "--set", "model.horizon=4"), 2)
    assert "model.horizon cannot change on resume" in line


# -- the probe cache under concurrent runs -------------------------------------------------------


def _fill_cache(cache_dir: str, worker: int, files: list[str]) -> None:
    os.environ["CONVLSTM_CACHE_DIR"] = cache_dir
    from convlstm_cli.data.probe import VideoInfo
    from convlstm_cli.data.probecache import ProbeCache

    for round_ in range(5):  # several read-modify-write rounds each, to interleave with the others
        cache = ProbeCache()
        for path in files[round_::5]:
            cache.put(path, VideoInfo(path, worker, 32, 32, 10.0))
        cache.save()


def test_concurrent_runs_share_the_probe_cache(tmp_path):
    from convlstm_cli.data.probecache import ProbeCache

    files = []
    for i in range(80):
        files.append(tmp_path / f"f{i}.mp4")
        files[-1].write_bytes(b"x" * (i + 1))
    shares = [[str(f) for f in files[w::4]] for w in range(4)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_fill_cache, args=(str(tmp_path / "cache"), w, shares[w])) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    data = json.loads((tmp_path / "cache" / "probe-v1.json").read_text())  # valid JSON, not interleaved
    assert len(data) == 80  # every process's entries survived the others' saves
    cache = ProbeCache(tmp_path / "cache" / "probe-v1.json")
    assert all(cache.get(f)["info"]["frames"] == i % 4 for i, f in enumerate(files))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["probe-v1.json"]


def test_ci_runs_the_readme_test_command():
    """`.ci/run` installs what the README's test command installs and runs the same pytest command."""
    import re

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("Install and run the tests"):]
    command = re.search(r"```bash\n(.+?)\n```", block, re.S).group(1).strip()
    install, test = (part.strip() for part in command.split("&&"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert install.startswith("pip install ") and f"python -m {install}" in ci
    assert re.search(rf"^{re.escape(test)}$", ci, re.M)
