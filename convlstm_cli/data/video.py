"""Video files through PyAV (FFmpeg): open, decode + resize, write H.264.

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

import itertools
import os
import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from convlstm_cli.errors import VideoError

# Demuxers FFmpeg uses for still images; a picture renamed to .avi opens as a one-frame "video".
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe")


class VideoDecodeWarning(UserWarning):
    """A video stream broke mid-way; the frames before the break were kept."""


def _video_error(path, reason: str) -> VideoError:
    err = VideoError(f"{path}: {reason}")
    err.path, err.reason = str(path), reason
    return err


def _ffmpeg_message(e: Exception) -> str:
    # FFmpegError's str() repeats the file name; its strerror is the useful part.
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _open_video(path):
    """Open ``path`` and pick its video stream; returns (container, stream) or raises VideoError."""
    import av

    p = Path(path)
    if not p.is_file():
        raise _video_error(p, "not a file" if p.exists() else "no such file")
    if p.stat().st_size == 0:
        raise _video_error(p, "empty file (0 bytes)")
    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise _video_error(p, f"not a readable video ({_ffmpeg_message(e)})") from None
    try:
        if container.format.name in _IMAGE_FORMATS:
            raise _video_error(p, f"a still image ({container.format.name}), not a video")
        streams = [
            s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            kind = "audio only" if container.streams.audio else "no streams"
            raise _video_error(p, f"no video stream ({kind})")
        stream = streams[0]
        # PyAV#2344: decoding a stream without a codec context kills the process; never touch it.
        if stream.codec_context is None:
            raise _video_error(p, "video stream has no decoder (corrupt header or unsupported codec)")
        if stream.codec_context.width <= 0 or stream.codec_context.height <= 0:
            raise _video_error(p, "video stream has no frame size (corrupt header)")
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
) -> Iterator[np.ndarray]:
    """Decode a video sequentially, one frame at a time.

    Args:
        path: The video file.
        size: ``(H, W)`` to resize to inside FFmpeg, or None for the native size.
        channels: 1 for gray, 3 for RGB.
        stride: Keep every ``stride``-th decoded frame.
        start: First strided frame to yield (earlier frames are decoded and dropped, never seeked:
            seeking is not frame-exact for variable frame rates).
        on_error: Called with one line (path and reason) when the stream breaks mid-way; the
            iteration then ends, keeping the frames already yielded. Default: `VideoDecodeWarning`.

    Yields:
        uint8 arrays ``[C, H, W]``.

    Raises:
        VideoError: The file cannot be opened as a video.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if stride < 1 or start < 0:
        raise ValueError(f"stride must be >= 1 and start >= 0, got stride={stride}, start={start}")
    container, stream = _open_video(path)
    fmt = "gray" if channels == 1 else "rgb24"
    # Frame threading helps large frames; for small ones its hand-offs cost more than they save.
    if stream.codec_context.width * stream.codec_context.height >= 640 * 360:
        stream.thread_type = "AUTO"
    return _decode(container, stream, path, size, fmt, stride, start * stride, on_error or _warn)


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
                on_error(f"{path}: stream broke after frame {index} ({_ffmpeg_message(e)})")
                return
            index += 1
            yield array[None] if fmt == "gray" else np.ascontiguousarray(array.transpose(2, 0, 1))
    finally:
        container.close()


def read_frames(path, size=None, channels: int = 1, stride: int = 1, start: int = 0, count=None, on_error=None):
    """Decode frames ``[start, start + count)`` (strided units) into one array.

    Args:
        path, size, channels, stride, start, on_error: As for `iter_frames`.
        count: Number of frames, or None for all to the end.

    Returns:
        uint8 array ``[T, C, H, W]`` (T may be less than ``count`` near the end of the video).
    """
    frames = list(itertools.islice(iter_frames(path, size, channels, stride, start, on_error), count))
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


_write_serial = itertools.count()  # unique temporary names for concurrent writers in one process


def write_video(
    path,
    frames: np.ndarray,
    fps: float = 10.0,
    crf: int = 18,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    faststart: bool = True,
) -> Path:
    """Encode frames to a video file (H.264 mp4 by default), atomically.

    The file is written under a temporary name in the same directory and moved into place at the
    end, so a reader never sees half a file. Odd sizes are padded to even ones by repeating the last
    row/column (yuv420p needs even sizes).

    Args:
        path: Output file; its extension picks the container (.mp4, .mkv, .webm, .avi, .mov, ...).
        frames: uint8 (or float in [0, 1]) ``[T, H, W]`` gray, ``[T, H, W, C]`` or ``[T, C, H, W]``
            with C = 1 or 3 (channels-first when dim 1 is 1 or 3 and the last is not).
            The parent directory is created if missing.
        fps: Frame rate.
        crf: Quality for libx264 / libvpx-vp9 (0 = lossless in YUV, 18 ≈ visually lossless).
        codec: FFmpeg encoder name.
        pix_fmt: Encoder pixel format.
        options: Extra encoder options; they override the defaults derived from ``crf``.
        faststart: Put the mp4/mov index first, so players can start before the file is loaded.

    Returns:
        The path written.
    """
    import av

    path = Path(path)
    rgb = _as_thwc(frames)
    t, h, w, c = rgb.shape
    pad_h, pad_w = (h % 2, w % 2) if pix_fmt.startswith("yuv420") else (0, 0)
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    opts = {"crf": str(crf)} if codec in ("libx264", "libx265", "libvpx-vp9") else {}
    if codec == "libvpx-vp9":
        opts.update({"b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"})
    opts.update(options or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{next(_write_serial)}.tmp{path.suffix}")
    rate = Fraction(fps).limit_denominator(1001)
    mp4 = path.suffix.lower() in (".mp4", ".m4v", ".mov")
    fmt_opts = {"movflags": "+faststart"} if faststart and mp4 else {}
    try:
        with av.open(str(tmp), mode="w", options=fmt_opts) as container:
            stream = container.add_stream(codec, rate=rate, options=opts)
            stream.width, stream.height, stream.pix_fmt = w + pad_w, h + pad_h, pix_fmt
            src = "gray" if c == 1 else "rgb24"
            for i, image in enumerate(rgb):
                frame = av.VideoFrame.from_ndarray(image[..., 0] if c == 1 else image, format=src)
                frame.pts = i
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
