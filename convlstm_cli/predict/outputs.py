"""The files around `convlstm predict`: the clip going in, the pictures and metrics.json coming out.

`open_clip` probes a clip and says how it will be converted to what the model expects (size, colour,
temporal stride). `PredictionOutputs` streams the side-by-side frames into prediction.mp4 and
prediction.gif while the clip plays, and at the end writes forecast.png and metrics.json; every file
is written under a temporary name and all are renamed into place together by `commit()`. Leaving the
`with` block through an exception deletes the temporary files (and the output directory if this run
created it and it is empty), so a failed run leaves nothing behind.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from convlstm_cli import jsonsafe
from convlstm_cli.atomic import Staged
from convlstm_cli.data.arrays import open_array
from convlstm_cli.data.sources import kind_of, split_array_name
from convlstm_cli.data.video import VideoWriter
from convlstm_cli.errors import InputError
from convlstm_cli.predict.render import PanelLayout, encode_png, strip_image

STRIP_MAX_COLUMNS = 16  # forecast.png shows at most this many forecast frames (evenly spread)


def to_uint8(x: Tensor) -> np.ndarray:
    """Frames in [0, 1] (any shape) → uint8 numpy, rounded."""
    return x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


@dataclass
class ClipSource:
    """A clip as the model will see it: decoded at `size`, `channels`, every `stride`-th frame."""

    path: Path
    size: tuple[int, int]
    channels: int
    stride: int
    fps: float
    expected_frames: int | None
    max_frames: int | None = None
    notes: list[str] = field(default_factory=list)
    resize: str = "stretch"
    units: tuple | None = None  # an array's (dtype, data.range): predictions go back into its units

    def frames(self) -> Iterator[np.ndarray]:
        """uint8 [C, H, W] frames, decoded lazily one at a time (centre crop or pad, as trained)."""
        from convlstm_cli.data.video import iter_frames

        it = iter_frames(self.path, self.size, self.channels, self.stride, resize=self.resize)
        return itertools.islice(it, self.max_frames) if self.max_frames else it


def _is_colour(path: Path) -> bool:
    """Whether the clip's first frame has colour (channels differ), judged on a small decode."""
    from convlstm_cli.data.video import iter_frames

    first = next(iter_frames(path, (32, 32), channels=3), None)
    if first is None:
        return False
    f = first.astype(np.int16)
    return int(np.abs(f - f.mean(axis=0, keepdims=True)).max()) > 8  # codecs leave a little chroma noise


def open_clip(path: str | Path, config, max_frames: int | None = None) -> ClipSource:
    """Probe `path` and plan its conversion to the model's input (config: the checkpoint's RunConfig).

    Raises:
        VideoError: the file is missing, unreadable or not a video (one line naming it).
    """
    from convlstm_cli.data.probe import probe_video

    path = Path(path)
    info = probe_video(path)
    (h, w), c, stride, resize = config.data.hw(), config.data.channels, config.data.stride, config.data.resize
    notes = []
    if (info.height, info.width) != (h, w):
        how = {"crop": "the short side fitted, the centre kept", "pad": "the long side fitted, black bars added",
               "stretch": "stretched"}[resize]
        notes.append(f"clip is {info.width}x{info.height}; resized to the model's {w}x{h} ({how}: data.resize {resize})")
    colour = _is_colour(path)
    if c == 1 and colour:
        notes.append("clip is in colour; converted to grayscale (the model takes 1 channel)")
    elif c == 3 and not colour:
        notes.append("clip is grayscale; converted to RGB (the model takes 3 channels)")
    if stride > 1:
        notes.append(f"1 frame in every {stride} is used (the model was trained with data.stride={stride})")
    expected = info.strided_frames(stride)
    if max_frames:
        expected = min(expected, max_frames)
    fps = info.fps / stride if info.fps > 0 else 0.0  # 0: no declared rate (the writers say so)
    units = None
    if kind_of(path) == "array":
        units = (str(open_array(split_array_name(path)[0]).data.dtype), config.data.range)
    return ClipSource(path, (h, w), c, stride, fps, expected, max_frames, notes, resize, units)


class PredictionOutputs:
    """Writes the outputs of one prediction run atomically (see the module docstring).

    Args:
        out_dir: the output directory, or None to write nothing.
        source: the clip (size, channels, fps).
        video, gif, png: which of prediction.mp4, prediction.gif, forecast.png to write.
        gif_max_frames: the GIF keeps only the first this many frames.
        error_gain: error panels show |error| × gain.
        pred_label: label of the prediction panel.
    """

    def __init__(self, out_dir, source: ClipSource, *, video=True, gif=True, png=True, gif_max_frames=300,
                 error_gain=4.0, pred_label="prediction t+1"):
        self.dir = Path(out_dir) if out_dir is not None else None
        self.source, self.gain = source, error_gain
        self.want = {"video": video, "gif": gif, "png": png} if self.dir else {}
        self.gif_max_frames = gif_max_frames
        h, w = source.size
        self.labels = ("truth", pred_label, f"|error| x{error_gain:g}")
        wants_frames = self.want.get("video") or self.want.get("gif")
        self.layout = PanelLayout(h, w, source.channels, self.labels) if wants_frames else None
        self.count = 0  # images composed for the video
        self.writers: dict[str, VideoWriter] = {}
        self.strip: tuple[int, Sequence[np.ndarray], np.ndarray] | None = None
        self.staged: list[Staged] = []  # finished files waiting for commit
        self._created_dir = False
        self.predictions: list[np.ndarray] = []  # float [n, C, H, W] chunks, kept for prediction.npy (arrays)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> PredictionOutputs:
        if self.dir is not None:
            if self.dir.exists() and not self.dir.is_dir():
                raise InputError(f"{self.dir}: exists and is not a directory (--out needs a directory)")
            self._created_dir = not self.dir.exists()
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"{self.dir}: cannot create the output directory ({e.strerror})") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()

    def discard(self) -> None:
        """Delete every temporary file (and the output directory if this run made it and it is empty)."""
        for w in self.writers.values():
            w.discard()
        for s in self.staged:
            s.discard()
        if self._created_dir and self.dir is not None:
            try:
                self.dir.rmdir()
            except OSError:  # not empty: someone else put files there
                pass

    # -- streaming ---------------------------------------------------------------------------------
    def _writer(self, kind: str) -> VideoWriter | None:
        if not self.want.get(kind):
            return None
        if kind not in self.writers:
            name = "prediction.mp4" if kind == "video" else "prediction.gif"
            cap = self.gif_max_frames if kind == "gif" else None
            # veryfast: encoding must keep up with small-frame inference on long clips.
            opts = {"preset": "veryfast"} if kind == "video" else None
            self.writers[kind] = VideoWriter(self.dir / name, self.source.fps, options=opts, max_frames=cap)
        return self.writers[kind]

    def add_frames(self, truths: Sequence[np.ndarray | None], preds: np.ndarray) -> None:
        """Append truth | prediction | error images; truth None means past the clip's end."""
        writers = [w for w in (self._writer("video"), self._writer("gif")) if w is not None]
        for truth, pred in zip(truths, preds, strict=True):
            self.count += 1
            writers = [w for w in writers if w.max_frames is None or w.frames < w.max_frames]
            if writers:
                image = self.layout.triptych(truth, pred, self.gain)
                for w in writers:
                    w.write(image)

    def add_predictions(self, preds: Tensor) -> None:
        """Keep predictions in [0, 1] for prediction.npy (only when the clip is an array)."""
        if self.dir is not None and self.source.units is not None:
            self.predictions.append(preds.detach().float().cpu().numpy())

    def set_strip(self, anchor: int, truths: Sequence[np.ndarray], preds: np.ndarray) -> None:
        """Remember the forecast shown in forecast.png: frames anchor+1 … from frame `anchor`."""
        if self.want.get("png"):
            self.strip = (anchor, [np.array(t) for t in truths], np.array(preds))

    # -- the end -----------------------------------------------------------------------------------
    def _write_temp(self, name: str, data: bytes) -> None:
        staged = Staged(self.dir / name)
        self.staged.append(staged)
        staged.tmp.write_bytes(data)

    def _write_array(self) -> None:
        """prediction.npy: the predictions [N, C, H, W] in the array's own units (at the model's size)."""
        from convlstm_cli.data.arrays import from_unit

        dtype, value_range = self.source.units
        staged = Staged(self.dir / "prediction.npy")
        self.staged.append(staged)
        np.save(staged.tmp, from_unit(np.concatenate(self.predictions), np.dtype(dtype), value_range))

    def strip_png(self) -> bytes:
        anchor, truths, preds = self.strip
        k = preds.shape[0]
        cols = sorted({int(round(x)) for x in np.linspace(0, k - 1, min(k, STRIP_MAX_COLUMNS))})
        columns = [(truths[j] if j < len(truths) else None, preds[j]) for j in cols]
        title = f"forecast from frame {anchor} ({k} frames{', some shown' if len(cols) < k else ''})"
        return encode_png(strip_image(columns, [f"t+{j + 1}" for j in cols], self.gain, self.source.channels, title))

    def commit(self, result) -> dict[str, str]:
        """Finish every file, write metrics.json from `result`, rename all into place.

        Returns:
            {output name: final path} of the files written (also stored in `result.outputs`).
        """
        if self.dir is None:
            return {}
        for w in self.writers.values():
            w.close()
        finals = {k: str(w.path) for k, w in self.writers.items()}
        if self.strip is not None:
            self._write_temp("forecast.png", self.strip_png())
            finals["png"] = str(self.dir / "forecast.png")
        if self.predictions:
            self._write_array()
            finals["array"] = str(self.dir / "prediction.npy")
        finals["metrics"] = str(self.dir / "metrics.json")
        gif = self.writers.get("gif")
        if gif is not None and gif.frames < self.count:
            result.notes.append(f"prediction.gif holds the first {gif.frames} of {self.count} frames "
                                "(prediction.mp4 holds all)")
        for w in self.writers.values():
            if w.note and w.note not in result.notes:
                result.notes.append(w.note)
        result.outputs = finals
        metrics = json.dumps(jsonsafe.clean(result.to_dict()), indent=1, allow_nan=False)
        self._write_temp("metrics.json", metrics.encode())
        for w in self.writers.values():
            w.commit()
        for s in self.staged:
            s.commit()
        self.staged.clear()
        return finals
