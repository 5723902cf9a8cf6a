"""Finding and probing sequences: which are usable, and their size, rate and exact frame count.

A sequence is a video file (probed through PyAV/FFmpeg), a folder of image frames, or one sequence of
an `.npy`/`.npz` array (`data.sources`). `probe_videos` walks a directory for all three and probes
each; one that cannot be used is skipped with a one-line reason (`Skipped`), never silently.
`probe_video` raises `VideoError` for such a file. `av` is imported inside the functions so that
importing this module stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from convlstm_cli.data.arrays import first_nonfinite, open_array
from convlstm_cli.data.frames import probe_frames
from convlstm_cli.data.probecache import ProbeCache
from convlstm_cli.data.sources import ARRAY_EXTENSIONS, IMAGE_EXTENSIONS, kind_of, split_array_name
from convlstm_cli.data.video import RAW_FORMATS, ffmpeg_message, open_video
from convlstm_cli.errors import InputError, NoUsableVideoError, VideoError

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
    ".h264", ".264", ".h265", ".265", ".hevc",  # raw elementary streams (e.g. Raspberry Pi cameras)
)  # fmt: skip
# GIF is left out on purpose: run directories hold prediction.gif files, which are not training data.


@dataclass
class VideoInfo:
    """What a probe learnt about one usable video.

    Attributes:
        path: The file.
        frames: Number of decodable frames (before any temporal stride).
        height, width: Native frame size.
        fps: Average frame rate (0.0 when the file declares none, as in a raw H.264 stream).
        codec: Decoder name, e.g. ``h264``.
        counted: True when ``frames`` came from decoding, not from the container's header.
        first: First decoded frame when this describes a segment of the video (a validation tail
            starts after the frames trained on); ``frames`` then counts the segment's frames.
    """

    path: str
    frames: int
    height: int
    width: int
    fps: float
    codec: str = ""
    counted: bool = False
    first: int = 0

    def strided_frames(self, stride: int = 1) -> int:
        """Frames left after keeping every ``stride``-th one."""
        return -(-self.frames // stride)

    @property
    def name(self) -> str:
        """The path, and where the segment starts when it is one (``clip.mp4@300``)."""
        return f"{self.path}@{self.first}" if self.first else self.path

    def segment(self, first: int, frames: int) -> VideoInfo:
        """Decoded frames ``[first, first + frames)`` of this video (``first`` a multiple of the stride)."""
        return replace(self, first=self.first + first, frames=frames)


@dataclass
class Skipped:
    """A file that is not used, and why (one line)."""

    path: str
    reason: str


@dataclass
class ProbeResult:
    """Usable videos and the files skipped, each with its reason (and notes: detected array layouts)."""

    videos: list[VideoInfo] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the terminal: counts, notes, then one line per skipped file."""
        frames = sum(v.frames for v in self.videos)
        lines = [f"{len(self.videos)} usable videos ({frames} frames), {len(self.skipped)} skipped"]
        lines += [f"  {n}" for n in self.notes]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def _fps(container, stream) -> float:
    if container.format.name in RAW_FORMATS:  # no timing in the file: FFmpeg's 25 is a guess
        return 0.0
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _count_packets(container, stream) -> tuple[int, int, bool]:
    """Count the stream's packets without decoding; (frames, dropped by an edit list, damaged)."""
    import av

    count, dropped, damaged = 0, 0, False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's flush packet
            if packet.is_discard:
                dropped += 1  # listed in the index, but an edit list hides it from playback
                continue
            damaged |= packet.is_corrupt
            count += 1
    except av.FFmpegError:
        damaged = True
    return count, dropped, damaged


def _count_decoded(path) -> tuple[int, str | None]:
    """Count frames by decoding them (no conversion); (count, error message or None)."""
    import av

    container, stream = open_video(path)
    count = 0
    try:
        with container:
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                count += 1
    except (av.FFmpegError, ValueError) as e:
        return count, ffmpeg_message(e)
    return count, None


def probe_video(path) -> VideoInfo:
    """Look at one file: size, rate and an exact frame count.

    The container's frame count is checked against its packets (demuxed, not decoded); when it is
    missing or disagrees, the frames are counted by decoding. A file whose index lists more frames
    than the file holds is truncated and rejected, as is one whose decoder fails.

    Args:
        path: A video file (any extension).

    Returns:
        The `VideoInfo`.

    Raises:
        VideoError: The file cannot be used; the message names it and gives the reason.
    """
    kind = kind_of(path)
    if kind != "video":
        return probe_array(path) if kind == "array" else probe_frame_folder(path)
    container, stream = open_video(path)
    with container:
        cc = stream.codec_context
        info = VideoInfo(str(path), 0, cc.height, cc.width, _fps(container, stream), cc.name)
        header = stream.frames
        packets, dropped, damaged = _count_packets(container, stream)
    if header > 0 and packets + dropped < header:
        raise VideoError(path, f"truncated: the container lists {header} frames, the file holds {packets + dropped}")
    if header > 0 and packets == header and not damaged:
        info.frames = header
        return info
    frames, error = _count_decoded(path)
    if error is not None:
        raise VideoError(path, f"damaged: decoding failed after {frames} frames ({error})")
    if frames == 0:
        raise VideoError(path, "no decodable frames")
    info.frames, info.counted = frames, True
    return info


def probe_frame_folder(folder) -> VideoInfo:
    """`probe_video` for a folder of image frames (no declared rate: fps 0)."""
    frames, h, w, fmt = probe_frames(folder)
    return VideoInfo(str(folder), frames, h, w, 0.0, f"frames ({fmt})")


def probe_array(name) -> VideoInfo:
    """`probe_video` for one sequence of an array, ``data.npy#k`` (or ``data.npy`` holding one)."""
    file, k = split_array_name(name)
    array = open_array(file)
    if k is None and array.count != 1:
        raise VideoError(file, f"holds {array.count} sequences ({array.note}): name one as {file.name}#K")
    k = k or 0
    if not 0 <= k < array.count:
        raise VideoError(file, f"has no sequence {k} (it holds {array.count})")
    seq = array.sequence(k)
    if (t := first_nonfinite(seq)) is not None:
        raise VideoError(name, f"holds NaN or infinity (frame {t})")
    return VideoInfo(f"{file}#{k}", len(seq), seq.shape[-2], seq.shape[-1], 0.0, f"array {array.layout}")


def find_video_files(root) -> list[Path]:
    """Sequences under ``root`` (recursive), sorted: video files, arrays, and folders of image frames.

    Hidden names are left out; a folder whose files are images is one sequence (not searched further).
    """
    root = Path(root)
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop: this folder was walked already
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(Path(n).suffix.lower() in IMAGE_EXTENSIONS for n in filenames):
            found.append(Path(dirpath))  # a frame folder
            continue
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS + ARRAY_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)


def _expand(paths: list[Path], notes: list[str], skipped: list) -> list:
    """Arrays of several sequences become one entry per sequence (``data.npy#k``)."""
    out = []
    for p in paths:
        if kind_of(p) != "array" or split_array_name(p)[1] is not None:
            out.append(p)
            continue
        try:
            array = open_array(p)
        except VideoError as e:
            skipped.append(Skipped(str(p), e.reason))
            continue
        notes.append(f"{p}: {array.note}, {array.count} sequences of {array.sequence(0).shape[0]} frames")
        out += [Path(f"{p}#{k}") for k in range(array.count)] if array.count > 1 else [p]
    return out


def _probe_one(p: Path, cache: ProbeCache, min_frames: int) -> VideoInfo | Skipped:
    """One sequence: its VideoInfo, or why it is skipped (a video's outcome is remembered in `cache`)."""
    video = kind_of(p) == "video"  # frame folders and arrays: headers only, nothing to remember
    if video and (seen := cache.get(p)) is not None:
        if "error" in seen:
            return Skipped(str(p), seen["error"])
        info = VideoInfo(**{**seen["info"], "path": str(p)})
    else:
        try:
            info = probe_video(p)
        except VideoError as e:
            if video:
                cache.put(p, error=e.reason)
            return Skipped(str(p), e.reason)
        if video:
            cache.put(p, info)
    if info.frames < min_frames:
        return Skipped(str(p), f"too short: {info.frames} frames, need at least {min_frames}")
    return info


def probe_videos(root, min_frames: int = 1, workers: int = 2) -> ProbeResult:
    """Probe a directory (recursively) or a single file.

    Args:
        root: Directory to search for files with a `VIDEO_EXTENSIONS` extension, or one video file.
        min_frames: Videos with fewer frames are skipped as too short.
            Outcomes are remembered per file (`probecache`): an unchanged file is not probed again.
        workers: Files probed in parallel (PyAV releases the GIL while it demuxes and decodes).

    Returns:
        The usable videos (sorted by path) and the skipped files with their reasons.

    Raises:
        InputError: ``root`` does not exist.
        NoUsableVideoError: Nothing usable was found; the message counts what was skipped and why.
    """
    from concurrent.futures import ThreadPoolExecutor

    root = Path(root)
    if not split_array_name(root)[0].exists():
        raise InputError(f"{root}: no such file or directory")
    single = root.is_file() or split_array_name(root)[1] is not None or kind_of(root) == "frames"
    notes, skipped = [], []
    paths = _expand([root] if single else find_video_files(root), notes, skipped)
    if not paths and not skipped:
        raise NoUsableVideoError(f"{root}: no video files found, nor frame folders or arrays "
                                 f"(looked for {', '.join(VIDEO_EXTENSIONS + ARRAY_EXTENSIONS)} and image folders)")

    cache = ProbeCache()
    with ThreadPoolExecutor(max(1, min(workers, len(paths)))) as pool:
        outcomes = list(pool.map(lambda p: _probe_one(p, cache, min_frames), paths))
    cache.save()
    result = ProbeResult(
        [o for o in outcomes if isinstance(o, VideoInfo)], skipped + [o for o in outcomes if isinstance(o, Skipped)],
        notes,
    )
    if not result.videos:
        reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in result.skipped[:3])
        raise NoUsableVideoError(f"{root}: no usable video ({len(result.skipped)} files skipped; {reasons})")
    return result
