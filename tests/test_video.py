"""PyAV decoding, probing and writing: formats, resize/stride/start, broken files, the probe CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from convlstm_cli.cli import app
from convlstm_cli.data import probe as P
from convlstm_cli.data import probecache
from convlstm_cli.data import video as V
from convlstm_cli.data.synthetic import decode_index, index_frames, write_index_video
from convlstm_cli.errors import InputError, NoUsableVideoError, VideoError

runner = CliRunner()


def _png(width: int, height: int) -> bytes:
    """A valid PNG, built by hand so the test needs no image library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(width * 3) for _ in range(height))  # filter byte + black pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """One good video beside every kind of bad file; returns (dir, {bad file name: reason fragment})."""
    root = tmp_path_factory.mktemp("bad")
    good = write_index_video(root / "good.mp4", 20, (32, 32)).read_bytes()
    (root / "zero.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is a text file, not a video\n" * 10)
    (root / "picture.avi").write_bytes(_png(16, 16))
    (root / "cut_in_half.mp4").write_bytes(good[: len(good) // 2])  # index up front, data cut
    moov_last = V.write_video(root / "moov_last.mp4", index_frames(20, (32, 32)), faststart=False).read_bytes()
    (root / "moov_last.mp4").write_bytes(moov_last[: len(moov_last) // 2])  # index lost with the tail
    # PyAV#2344: cut where the codec description starts, the stream opens without a codec context.
    (root / "cut_in_header.mp4").write_bytes(good[: good.index(b"stsd")])
    _write_audio_only(root / "sound.mp4")
    (root / "sub").mkdir()
    write_index_video(root / "sub" / "short.mkv", 3, (32, 32))
    (root / "readme.txt").write_text("not a video extension: ignored, not skipped")
    return root, {
        "zero.mp4": "empty file",
        "notes.mp4": "not a readable video",
        "picture.avi": "still image",
        "cut_in_half.mp4": "truncated",
        "moov_last.mp4": "not a readable video",
        "cut_in_header.mp4": "no decoder",
        "sound.mp4": "audio only",
        "short.mkv": "too short",
    }


# -- writing -------------------------------------------------------------------------------------


def test_write_video_gray_round_trip_pads_odd_sizes(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 256, (6, 5, 7), dtype=np.uint8), 4, 1), 4, 2)[:, :19, :27]
    path = V.write_video(tmp_path / "odd.mp4", frames, fps=12.5)
    info = P.probe_video(path)
    assert (info.frames, info.height, info.width, info.fps, info.codec) == (6, 20, 28, 12.5, "h264")
    decoded = V.read_frames(path, None, 1)[:, 0].astype(int)
    assert decoded.shape == (6, 20, 28)
    assert np.abs(decoded[:, :19, :27] - frames).mean() < 3  # crf 18: close, not exact
    assert np.abs(decoded[:, 19] - decoded[:, 18]).mean() < 3  # padding repeats the edge
    assert [p.name for p in tmp_path.iterdir()] == ["odd.mp4"]  # no temporary file left


@pytest.mark.parametrize("layout", ["thwc", "tchw", "float"])
def test_write_video_colour_layouts(tmp_path, layout):
    thwc = np.zeros((4, 16, 24, 3), np.uint8)
    thwc[..., 0], thwc[:, :, :12, 2] = 200, 120  # red everywhere, blue on the left half
    data = {"thwc": thwc, "tchw": thwc.transpose(0, 3, 1, 2), "float": thwc / 255.0}[layout]
    decoded = V.read_frames(V.write_video(tmp_path / "c.mp4", data), None, 3).astype(int)
    assert decoded.shape == (4, 3, 16, 24)
    assert np.abs(decoded - thwc.transpose(0, 3, 1, 2)).mean() < 6


def test_write_video_is_atomic_and_keeps_the_old_file_on_failure(tmp_path):
    path = V.write_video(tmp_path / "a.mp4", index_frames(3, (16, 16)))
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any encoder error; what matters is what is left
        V.write_video(path, index_frames(3, (16, 16)), codec="no-such-codec")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_write_video_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="frames must be"):
        V.write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 5), np.uint8))


# -- decoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "header_count"),
    [("a.webm", "libvpx-vp9", False), ("a.mkv", "libx264", False), ("a.avi", "mpeg4", True), ("a.mov", "libx264", True)],
)
def test_containers_and_codecs(tmp_path, name, codec, header_count):
    options = {"b": "4M"} if codec == "mpeg4" else None  # mpeg4 has no crf: a high bitrate instead
    path = V.write_video(tmp_path / name, index_frames(12, (32, 32)), codec=codec, crf=4, options=options)
    info = P.probe_video(path)
    assert (info.frames, info.height, info.width) == (12, 32, 32)
    assert info.counted is not header_count  # counted by decoding only where the container has no count
    assert list(decode_index(V.read_frames(path, (16, 16), 1))) == list(range(12))


def test_resize_stride_start_and_count(tmp_path):
    path = write_index_video(tmp_path / "i.mp4", 50, (64, 48))
    frames = V.read_frames(path, (24, 20), 3, stride=3, start=4, count=7)
    assert frames.shape == (7, 3, 24, 20) and frames.dtype == np.uint8
    assert list(decode_index(frames)) == [3 * (4 + i) for i in range(7)]
    tail = V.read_frames(path, (16, 16), 1, stride=3, start=15)  # strided frames 15, 16 = raw 45, 48
    assert list(decode_index(tail)) == [45, 48]
    assert V.read_frames(path, (16, 16), 1, start=60).shape == (0, 1, 16, 16)


def test_variable_frame_rate(tmp_path):
    import av

    path = tmp_path / "vfr.mkv"
    frames = index_frames(15, (32, 32))
    gaps = [1, 3, 1, 7, 2, 1, 1, 9, 2, 1, 4, 1, 1, 5, 2]  # irregular, in 1/100 s
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 100)
        for image, pts in zip(frames, np.cumsum(gaps), strict=True):
            frame = av.VideoFrame.from_ndarray(image[..., 0], format="gray")
            frame.pts, frame.time_base = int(pts), Fraction(1, 100)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert P.probe_video(path).frames == 15
    assert list(decode_index(V.read_frames(path, None, 1))) == list(range(15))


def test_mid_stream_error_keeps_frames_and_reports(tmp_path, monkeypatch):
    import av

    path = write_index_video(tmp_path / "i.mp4", 12, (32, 32))
    real_open = V.open_video

    class Breaking:  # the real container, but its decoder fails after 5 frames
        def __init__(self, container):
            self.container = container

        def decode(self, stream):
            for i, frame in enumerate(self.container.decode(stream)):
                if i == 5:
                    raise av.InvalidDataError(1094995529, "Invalid data found when processing input")
                yield frame

        def close(self):
            self.container.close()

    monkeypatch.setattr(V, "open_video", lambda p: (lambda c, s: (Breaking(c), s))(*real_open(p)))
    errors = []
    assert list(decode_index(V.read_frames(path, None, 1, on_error=errors.append))) == [0, 1, 2, 3, 4]
    assert len(errors) == 1 and str(path) in errors[0] and "after frame 5" in errors[0]
    with pytest.warns(V.VideoDecodeWarning, match="Invalid data"):
        assert len(V.read_frames(path, None, 1)) == 5


def test_iter_frames_raises_video_error_when_it_cannot_open(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    with pytest.raises(VideoError, match=r"x\.mp4: not a readable video"):
        V.iter_frames(tmp_path / "x.mp4", (8, 8), 1)


def test_open_options_follow_the_pyav_version():
    # PyAV 19 removed av.open(metadata_errors=...) (it decodes tags with surrogateescape): passing it
    # there failed every open. The whole suite ran under PyAV 19 on Python 3.13 (its wheels need 3.12+).
    from types import SimpleNamespace

    assert V._open_options(SimpleNamespace(__version__="18.1.0")) == {"metadata_errors": "ignore"}
    assert V._open_options(SimpleNamespace(__version__="19.0.2")) == {}


@pytest.mark.parametrize("debug", ["", "1"])
def test_a_bad_file_is_reported_once_even_after_ffmpeg_logging_was_turned_on(tmp_path, caplog, monkeypatch, debug):
    # torchvision.io (before its video IO went) sets FFmpeg's log level to ERROR for the whole process
    # on import, and torch.onnx's exporter imports it: FFmpeg's raw "moov atom not found" then reached
    # stderr beside the one line of VideoError. CONVLSTM_DEBUG=1 keeps FFmpeg's lines.
    import av.logging

    monkeypatch.setenv("CONVLSTM_DEBUG", debug)
    (tmp_path / "x.mp4").write_text("not a video")
    before = av.logging.get_level()
    try:
        av.logging.set_level(av.logging.ERROR)  # what importing torchvision.io did
        with caplog.at_level("DEBUG"), pytest.raises(VideoError, match="not a readable video"):
            V.open_video(tmp_path / "x.mp4")
        after = av.logging.get_level()
    finally:
        av.logging.set_level(before)
    assert after == (av.logging.ERROR if debug else None)
    if not debug:  # (with debug, PyAV drops a line that repeats the last one, so its count varies)
        assert not [r for r in caplog.records if r.name.startswith("libav")]


# -- probing -------------------------------------------------------------------------------------


def test_probe_skips_each_bad_file_with_its_reason(bad_dir):
    root, expected = bad_dir
    result = P.probe_videos(root, min_frames=6)
    assert [Path(v.path).name for v in result.videos] == ["good.mp4"]
    assert result.videos[0].frames == 20
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert set(reasons) == set(expected)  # readme.txt is not a video extension: not listed
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    summary = result.summary()
    assert summary.startswith("1 usable videos (20 frames), 8 skipped")
    assert all(name in summary for name in expected)


def test_probe_trusts_a_whole_index_and_rejects_a_cut_one(bad_dir):
    info = P.probe_video(bad_dir[0] / "good.mp4")
    assert info.frames == 20 and not info.counted  # the index matched the packets: no decoding
    with pytest.raises(VideoError, match=r"truncated: the container lists 20 frames, the file holds \d+$"):
        P.probe_video(bad_dir[0] / "cut_in_half.mp4")


def test_find_video_files_recurses_skips_hidden_and_survives_symlink_loops(tmp_path):
    for name in ("b/clip.MP4", "a/x.webm", ".hidden/h.mp4", "a/.partial.mp4", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in P.find_video_files(tmp_path)] == ["a/x.webm", "b/clip.MP4"]


def test_probe_single_file_and_missing_paths(bad_dir, tmp_path):
    root, _ = bad_dir
    assert [v.frames for v in P.probe_videos(root / "good.mp4").videos] == [20]
    with pytest.raises(InputError, match="no such file or directory"):
        P.probe_videos(tmp_path / "missing")
    with pytest.raises(NoUsableVideoError, match="no video files found"):
        P.probe_videos(tmp_path)


def test_directory_without_usable_video_is_one_clear_error(bad_dir, tmp_path):
    root, _ = bad_dir
    for name in ("zero.mp4", "notes.mp4", "sound.mp4"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    with pytest.raises(NoUsableVideoError) as err:
        P.probe_videos(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "3 files skipped" in message
    assert "empty file" in message


def test_probe_cli_prints_table_and_fails_cleanly(bad_dir, tmp_path):
    root, _ = bad_dir
    ok = runner.invoke(app, ["probe", str(root), "--min-frames", "6"])
    assert ok.exit_code == 0, ok.output
    assert "good.mp4\t20 frames\t32x32" in ok.output and "8 skipped" in ok.output
    (tmp_path / "junk.mp4").write_text("junk")
    bad = runner.invoke(app, ["probe", str(tmp_path)])
    assert bad.exit_code == 2
    assert "error:" in bad.output and "junk.mp4" in bad.output and "Traceback" not in bad.output


def test_importing_the_package_does_not_import_av():
    code = (
        "import sys, convlstm_cli, convlstm_cli.data.video, convlstm_cli.data.probe, convlstm_cli.data.streamer, "
        "convlstm_cli.data.synthetic, convlstm_cli.cli; print('av' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_probe_outcomes_are_remembered_until_the_file_changes(bad_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVLSTM_CACHE_DIR", str(tmp_path / "cache"))
    root, _ = bad_dir
    work = tmp_path / "videos"
    work.mkdir()
    for name in ("good.mp4", "notes.mp4", "cut_in_half.mp4"):
        (work / name).write_bytes((root / name).read_bytes())
    first = P.probe_videos(work)
    assert (tmp_path / "cache" / "probe-v1.json").is_file()
    calls, real = [], P.probe_video
    monkeypatch.setattr(P, "probe_video", lambda p: calls.append(Path(p).name) or real(p))
    assert P.probe_videos(work) == first and calls == []  # usable and unusable files both remembered
    st = (work / "good.mp4").stat()
    os.utime(work / "good.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: probe again
    assert P.probe_videos(work) == first and calls == ["good.mp4"]
    (work / "notes.mp4").write_bytes((root / "good.mp4").read_bytes())  # replaced by a good video
    again = P.probe_videos(work)
    assert sorted(Path(v.path).name for v in again.videos) == ["good.mp4", "notes.mp4"]


def test_probe_cache_can_be_off_and_survives_a_corrupt_file(bad_dir, tmp_path, monkeypatch):
    good = bad_dir[0] / "good.mp4"
    monkeypatch.setenv("CONVLSTM_CACHE_DIR", "off")
    assert probecache.cache_file() is None and probecache.ProbeCache().file is None
    assert P.probe_videos(good).videos[0].frames == 20
    monkeypatch.setenv("CONVLSTM_CACHE_DIR", str(tmp_path))
    (tmp_path / "probe-v1.json").write_text("{not json")
    assert P.probe_videos(good).videos[0].frames == 20
    assert list(json.loads((tmp_path / "probe-v1.json").read_text()).values())[0]["info"]["frames"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe-v1.json"]  # no temporary left behind
