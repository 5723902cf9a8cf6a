"""Video files through PyAV (FFmpeg): open, decode + resize, write (H.264 or GIF).

Frames are uint8 arrays ``[C, H, W]`` (C = 1 gray or 3 RGB); resizing and colour conversion run
inside FFmpeg (swscale) with ``threads=1``, because PyAV's threaded conversion is several times
slower for small frames.

Frame positions with a temporal ``stride`` are counted in *strided* frames: with stride 2, strided
frame k is decoded frame 2k. A video of n decoded frames has ``ceil(n / stride)`` strided frames.

Decode errors in the middle of a stream end the iteration where the stream broke: the frames read so
far are kept and the error is reported through the ``on_error`` callback (by default a
`VideoDecodeWarning`). Files that cannot be used at all raise `VideoError` with one line naming the
file and the reason. `av` is imported inside the functions so that importing this module stays light.
Finding and probing files (`VideoInfo`, `probe_videos`) is in `convlstm_cli.data.probe`.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from convlstm_cli.atomic import Staged
from convlstm_cli.data.sources import kind_of
from convlstm_cli.data.view import RESIZE_MODES, base_size, fit
from convlstm_cli.errors import InputError, VideoError, debug_enabled

# Demuxers FFmpeg uses for still images; a picture renamed to .avi opens as a one-frame "video".
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe")


class VideoDecodeWarning(UserWarning):
    """A video stream broke mid-way; the frames before the break were kept."""


def ffmpeg_message(e: Exception) -> str:
    """The useful part of an FFmpeg error (its str() repeats the file name; strerror does not)."""
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# Raw elementary streams carry no timestamps: FFmpeg assumes 25 frames/s for them.
RAW_FORMATS = ("h264", "hevc")


def file_problem(p: Path) -> str | None:
    """Why ``p`` cannot be read as a file (missing, a link loop, a directory, unreadable, ...), or None."""
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        if p.is_symlink():
            return f"a broken symbolic link (to {os.readlink(p)})"
        return "no such file" if e.errno == errno.ENOENT else f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "a directory, not a video file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, socket or device)"
    if not os.access(p, os.R_OK):
        return "permission denied"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


def _quiet_ffmpeg(av) -> None:
    """FFmpeg's own log lines off, as PyAV starts, unless CONVLSTM_DEBUG is set.

    A bad file is reported once, by `VideoError` or `on_error`, with FFmpeg's reason in it. Importing
    torchvision.io of a torchvision with video IO (0.20 has it, 0.26 no longer), as torch.onnx's
    exporter does, turns FFmpeg's logging on at ERROR for the whole process: raw lines beside ours.
    """
    if av.logging.get_level() is not None and not debug_enabled():
        av.logging.set_level(None)


def _open_options(av) -> dict:
    """av.open's options: before PyAV 19, a tag that is not UTF-8 failed the open unless its errors
    were ignored; PyAV 19 decodes tags with surrogateescape and has no such option (passing it fails)."""
    return {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}


def open_video(path):
    """Open ``path`` and pick its video stream; returns (container, stream) or raises VideoError."""
    import av

    _quiet_ffmpeg(av)
    p = Path(path)
    problem = file_problem(p)
    if problem:
        raise VideoError(p, problem)
    try:
        container = av.open(str(p), mode="r", **_open_options(av))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(p, f"not a readable video ({ffmpeg_message(e)})") from None
    try:
        if container.format.name in _IMAGE_FORMATS:
            raise VideoError(p, f"a still image ({container.format.name}), not a video")
        streams = [
            s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            kind = "audio only" if container.streams.audio else "no streams"
            raise VideoError(p, f"no video stream ({kind})")
        stream = streams[0]
        # PyAV#2344: decoding a stream without a codec context kills the process; never touch it.
        if stream.codec_context is None:
            raise VideoError(p, "video stream has no decoder (corrupt header or unsupported codec)")
        if stream.codec_context.width <= 0 or stream.codec_context.height <= 0:
            raise VideoError(p, "video stream has no frame size (corrupt header)")
    except BaseException:
        container.close()
        raise
    return container, stream


def _warn(message: str) -> None:
    warnings.warn(message, VideoDecodeWarning, stacklevel=3)


def iter_frames(
    path,
    size: tuple[int, int] | None = None,
    channels: int = 1,
    stride: int = 1,
    start: int = 0,
    on_error: Callable[[str], None] | None = None,
    *,
    resize: str = "stretch",
    base: bool = False,
) -> Iterator[np.ndarray]:
    """Decode a video sequentially, one frame at a time (or read a frame folder or array sequence).

    Args:
        path: The video file, a folder of image frames, or one sequence of an array (``data.npy#3``).
        size: ``(H, W)`` to resize to, or None for the native size.
        channels: 1 for gray, 3 for RGB.
        stride: Keep every ``stride``-th decoded frame.
        start: First strided frame to yield (earlier frames are decoded and dropped, never seeked:
            seeking is not frame-exact for variable frame rates).
        on_error: Called with one line (path and reason) when the stream breaks mid-way; the
            iteration then ends, keeping the frames already yielded. Default: `VideoDecodeWarning`.
        resize: How another aspect ratio reaches ``size``: crop, pad or stretch (`data.view`).
        base: Yield frames at the base size (scaled, not yet cropped or padded to ``size``).

    Yields:
        uint8 arrays ``[C, H, W]``.

    Raises:
        VideoError: The file cannot be opened as a video.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if stride < 1 or start < 0:
        raise ValueError(f"stride must be >= 1 and start >= 0, got stride={stride}, start={start}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    kind = kind_of(path)
    if kind != "video":  # a folder of image frames, or one sequence of an array
        from convlstm_cli.data.arrays import iter_array
        from convlstm_cli.data.frames import iter_frame_folder

        read = iter_array if kind == "array" else iter_frame_folder
        return read(path, size, channels, stride, start, on_error, resize, base)
    container, stream = open_video(path)
    cc = stream.codec_context
    fmt = "gray" if channels == 1 else "rgb24"
    # Frame threading helps large frames; for small ones its hand-offs cost more than they save.
    if cc.width * cc.height >= 640 * 360:
        stream.thread_type = "AUTO"
    scaled = None if size is None else base_size((cc.height, cc.width), size, resize)
    out = None if size is None or base or scaled == tuple(size) else tuple(size)
    frames = _decode(container, stream, path, scaled, fmt, stride, start * stride, on_error or _warn)
    return frames if out is None else (fit(f, out) for f in frames)


def _decode(container, stream, path, size, fmt, stride, first, on_error) -> Iterator[np.ndarray]:
    import av
    from av.video.reformatter import VideoReformatter

    height, width = size if size is not None else (None, None)
    # One reformatter for the whole stream keeps its SwsContext; frame.reformat would rebuild it
    # per frame (1.5x slower at 64x64). AREA averages when shrinking, so downscaled frames don't alias.
    reformatter = VideoReformatter()
    try:
        decoded = container.decode(stream)
        index = 0
        while True:
            try:
                frame = next(decoded)
                if index < first or (index - first) % stride:
                    index += 1
                    continue
                frame = reformatter.reformat(
                    frame, width=width, height=height, format=fmt, interpolation="AREA", threads=1
                )
                array = frame.to_ndarray()
            except StopIteration:
                return
            except (av.FFmpegError, ValueError, MemoryError) as e:
                on_error(f"{path}: stream broke after frame {index} ({ffmpeg_message(e)})")
                return
            index += 1
            yield array[None] if fmt == "gray" else np.ascontiguousarray(array.transpose(2, 0, 1))
    finally:
        container.close()


def read_frames(path, size=None, channels: int = 1, stride: int = 1, start: int = 0, count=None, on_error=None,
                resize: str = "stretch"):
    """Decode frames ``[start, start + count)`` (strided units) into one array.

    Args:
        path, size, channels, stride, start, on_error, resize: As for `iter_frames`.
        count: Number of frames, or None for all to the end.

    Returns:
        uint8 array ``[T, C, H, W]`` (T may be less than ``count`` near the end of the video).
    """
    frames = list(itertools.islice(iter_frames(path, size, channels, stride, start, on_error, resize=resize), count))
    if not frames:
        h, w = size if size is not None else (0, 0)
        return np.zeros((0, channels, h, w), np.uint8)
    return np.stack(frames)


def _as_thwc(frames: np.ndarray) -> np.ndarray:
    """[T,H,W] / [T,H,W,C] / [T,C,H,W] (C in 1, 3), integers or floats in [0, 1] → uint8 [T,H,W,C]."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    elif frames.ndim == 4 and frames.shape[1] in (1, 3) and frames.shape[-1] not in (1, 3):
        frames = frames.transpose(0, 2, 3, 1)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.shape[0] == 0:
        raise ValueError(f"frames must be [T,H,W], [T,H,W,C] or [T,C,H,W] with C 1 or 3, got {frames.shape}")
    if np.issubdtype(frames.dtype, np.floating):
        frames = np.rint(np.clip(frames.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    elif frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return frames


# Output frame rates a file can hold. GIF stores delays in 1/100 s and browsers play delays under
# 2/100 s as 10/100 s, so a GIF tops out at 50 frames/s. mp4 holds any rate in principle, but players
# and H.264 levels do not: 240 (high-speed cameras) is the most we write. Slower than 1 frame/s is
# shown at 1 frame/s. A clip's rate can be far outside this: timestamps that average thousands of
# frames/s, or a time-lapse.
MAX_FPS = {"gif": 50.0, "video": 240.0}
MIN_FPS = 1.0


def output_rate(fps: float, gif: bool) -> tuple[Fraction, str | None]:
    """The rate to write for a clip of `fps` frames/s, and a note when it had to be changed."""
    top = MAX_FPS["gif" if gif else "video"]
    kind = "GIF" if gif else "video"
    if not fps or not math.isfinite(fps) or fps <= 0:
        return Fraction(25), f"the clip declares no frame rate: the {kind} plays at 25 frames/s (FFmpeg's assumption)"
    clamped = min(max(fps, MIN_FPS), top)
    rate = Fraction(clamped).limit_denominator(1001)
    if clamped != fps:
        return rate, f"the clip's {fps:.4g} frames/s is outside what a {kind} holds: it plays at {float(rate):g}"
    return rate, None


class VideoWriter:
    """Encode frames one at a time into a video file (H.264 by default) or a GIF, atomically.

    Frames go to a hidden temporary file beside `path` (`atomic.Staged`); `commit()` moves it into
    place, `discard()` (or an exception inside a ``with`` block) deletes it, so nothing half-written
    ever carries the final name. Odd sizes are padded to even ones by repeating the last row/column
    (yuv420p needs even sizes). The rate is clamped to what the format holds (`output_rate`; the
    reason is in `note`).

    Args:
        path: Output file; its extension picks the container (.mp4, .mkv, .webm, .avi, .mov, .gif).
        fps: Frame rate.
        codec: FFmpeg encoder; default libx264 (mpeg4 where FFmpeg lacks it), gif for .gif files.
        crf: Quality for libx264 / libvpx-vp9 (0 = lossless in YUV, 18 ≈ visually lossless).
        pix_fmt: Encoder pixel format (default yuv420p; gray or rgb8 for a GIF).
        options: Extra encoder options; they override the defaults derived from ``crf``.
        faststart: Put the mp4/mov index first, so players can start before the file is loaded.
        max_frames: Frames beyond this are ignored (a GIF of a long clip would be huge).
    """

    def __init__(self, path, fps: float = 10.0, codec: str | None = None, crf: int = 18,
                 pix_fmt: str | None = None, options: dict[str, str] | None = None, faststart: bool = True,
                 max_frames: int | None = None) -> None:
        import av

        self.path = Path(path)
        self.gif = self.path.suffix.lower() == ".gif" or codec == "gif"
        self.rate, self.note = output_rate(fps, self.gif)
        self.codec = codec or ("gif" if self.gif else "libx264" if "libx264" in av.codecs_available else "mpeg4")
        self.crf, self.pix_fmt, self.options, self.max_frames = crf, pix_fmt, options, max_frames
        self.frames = 0
        self.staged = Staged(self.path)
        mp4 = self.path.suffix.lower() in (".mp4", ".m4v", ".mov")
        fmt_opts = {"movflags": "+faststart"} if faststart and mp4 else {}
        self._container = av.open(str(self.staged.tmp), mode="w", format="gif" if self.gif else None,
                                  options=fmt_opts)
        self._stream = None
        self._pad = (0, 0)

    def _open_stream(self, h: int, w: int, c: int):
        if self.gif:
            opts, pix = {}, self.pix_fmt or ("gray" if c == 1 else "rgb8")
        else:
            opts = {"crf": str(self.crf)} if self.codec in ("libx264", "libx265", "libvpx-vp9") else {}
            if self.codec == "libvpx-vp9":
                opts.update({"b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"})
            if self.codec == "mpeg4":
                opts["qscale"] = "2"
            pix = self.pix_fmt or "yuv420p"
        opts.update(self.options or {})
        self._pad = (h % 2, w % 2) if pix.startswith("yuv420") else (0, 0)
        stream = self._container.add_stream(self.codec, rate=self.rate, options=opts)
        stream.height, stream.width, stream.pix_fmt = h + self._pad[0], w + self._pad[1], pix
        return stream

    def write(self, frame: np.ndarray) -> None:
        """Append one frame: [H, W], [H, W, C] or [C, H, W] (C 1 or 3), uint8 or float in [0, 1]."""
        import av

        if self.max_frames is not None and self.frames >= self.max_frames:
            return
        image = _as_thwc(np.asarray(frame)[None])[0]
        if self._stream is None:
            self._stream = self._open_stream(*image.shape)
        if any(self._pad):
            image = np.pad(image, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        gray = image.shape[-1] == 1
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., 0] if gray else image),
                                         format="gray" if gray else "rgb24")
        out.pts, out.time_base = self.frames, 1 / self.rate
        self._container.mux(self._stream.encode(out))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the temporary file."""
        if self._container is None:
            return
        try:
            if self._stream is not None:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None

    def commit(self) -> Path:
        """Finish the file and move it to its final name."""
        self.close()
        return self.staged.commit()

    def discard(self) -> None:
        """Close and delete the temporary file (an error happened)."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the encoder may be in a broken state; the file goes anyway
            pass
        self.staged.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


# The crf of generated data (`make-data`'s shapes and occlusion scenes): lossless, so a seed gives the
# same pixels. libx264 is not deterministic here even on one thread: the same 64×64 clip encoded 8
# times at crf 10 decoded to 3–5 different clips (up to 23 grey levels apart), which made two
# generations of "the same" training set differ and moved trained models' scores by ~0.2 dB.
LOSSLESS = 0


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Raise InputError naming the first of `paths` that exists, unless `overwrite` (make-data's --force)."""
    existing = None if overwrite else next((p for p in paths if p.exists()), None)
    if existing is not None:
        raise InputError(f"{existing} already exists; use --force to overwrite")


def write_video(path, frames: np.ndarray, fps: float = 10.0, crf: int = 18, codec: str = "libx264",
                pix_fmt: str = "yuv420p", options: dict[str, str] | None = None, faststart: bool = True) -> Path:
    """Encode a whole array of frames to a video file (H.264 mp4 by default), atomically.

    Args:
        path: Output file (see `VideoWriter`); the parent directory is created if missing.
        frames: uint8 (or float in [0, 1]) ``[T, H, W]`` gray, ``[T, H, W, C]`` or ``[T, C, H, W]``
            with C = 1 or 3 (channels-first when dim 1 is 1 or 3 and the last is not).
        fps, crf, codec, pix_fmt, options, faststart: As for `VideoWriter`.

    Returns:
        The path written.
    """
    rgb = _as_thwc(frames)
    with VideoWriter(path, fps, codec, crf, pix_fmt, options, faststart) as writer:
        for image in rgb:
            writer.write(image)
    return writer.path
