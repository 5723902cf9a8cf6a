"""How frames of any size reach the training size, and how a lane sees one pass over a video.

**Resizing** (`data.resize`). FFmpeg first scales a frame to a *base* size, then numpy crops or pads
it to the training size (H, W):

- ``crop`` (default): scale the short side to fit, keeping the aspect ratio, and crop the rest — a
  16:9 frame keeps its shapes (a circle stays a circle) and loses its sides;
- ``pad``: scale the long side to fit and pad the rest with black: nothing is lost, part of the
  frame is empty;
- ``stretch``: scale each side to fit (the first version's behaviour): nothing is lost, shapes are
  squashed.

Validation and `predict` crop at the centre. Training crops wherever the lane's `View` says.

**Views.** In training every lane draws a `View` each time it starts a pass over a video: where the
crop sits, a zoom (a smaller crop, enlarged), a horizontal flip, time reversal, and a brightness and
contrast change. The view is fixed for the whole pass, so the state a lane carries from chunk to
chunk sees one coherent video, and it is a pure function of (seed, rank, epoch, video): a resumed
run draws the same views without storing them (`draw_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESIZE_MODES = ("crop", "pad", "stretch")


@dataclass(frozen=True)
class Augment:
    """What training views may do (each drawn per lane and pass; see `draw_view`).

    Attributes:
        zoom: largest zoom: the crop covers between 1/zoom and all of the frame (1: no zoom).
        flip: probability of a horizontal flip.
        reverse: probability of playing the pass backwards in time.
        brightness: largest brightness shift, in units of the full range (0.1 = ±10 %).
        contrast: largest relative contrast change (0.1 = ×0.9 … ×1.1).
        reverse_max_frames: passes over longer videos are never reversed (a reversed pass holds the
            whole video at the base size in memory).
    """

    zoom: float = 1.0
    flip: float = 0.0
    reverse: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    reverse_max_frames: int = 4096

    @property
    def active(self) -> bool:
        return self.zoom > 1 or self.flip > 0 or self.reverse > 0 or self.brightness > 0 or self.contrast > 0


@dataclass(frozen=True)
class View:
    """One lane's view of one pass over a video.

    Attributes:
        y, x: where the crop sits in the room left over, 0 = top/left, 0.5 = centre, 1 = bottom/right.
        zoom: ≥ 1; the crop covers 1/zoom of the frame in each direction and is enlarged.
        flip: mirror left-right.
        reverse: play the pass backwards.
        gain, bias: contrast and brightness: v' = (v − ½)·gain + ½ + bias (in [0, 1] units).
    """

    y: float = 0.5
    x: float = 0.5
    zoom: float = 1.0
    flip: bool = False
    reverse: bool = False
    gain: float = 1.0
    bias: float = 0.0


CENTRE = View()


def draw_view(aug: Augment | None, seed: int, salt: int, epoch: int, video: int, length: int) -> View:
    """The view of pass `epoch` over `video` (a pure function: resuming draws the same one).

    Args:
        aug: what views may do; None: a random crop position only.
        seed, salt: the run's seed and the rank.
        epoch, video: which pass over which video.
        length: the video's frames (passes over long videos are not reversed).
    """
    rng = np.random.default_rng([seed, salt, epoch, video, 0x71E])
    y, x = (float(v) for v in rng.random(2))
    if aug is None:
        return View(y=y, x=x)
    u = rng.random(5)
    return View(
        y=y, x=x,
        zoom=float(aug.zoom ** u[0]),  # log-uniform in [1, zoom]
        flip=bool(u[1] < aug.flip),
        reverse=bool(u[2] < aug.reverse and length <= aug.reverse_max_frames),
        gain=float(1 + aug.contrast * (2 * u[3] - 1)),
        bias=float(aug.brightness * (2 * u[4] - 1)),
    )


def base_size(src_hw: tuple[int, int], out_hw: tuple[int, int], resize: str) -> tuple[int, int]:
    """The size FFmpeg scales a `src_hw` frame to before it is cropped or padded to `out_hw`."""
    (sh, sw), (h, w) = src_hw, out_hw
    if resize == "stretch" or sh <= 0 or sw <= 0:
        return h, w
    scale = max(h / sh, w / sw) if resize == "crop" else min(h / sh, w / sw)
    bh, bw = max(1, round(sh * scale)), max(1, round(sw * scale))
    if resize == "crop":  # rounding must not leave the base smaller than the output
        return max(bh, h), max(bw, w)
    return min(bh, h), min(bw, w)


def fit(frames: np.ndarray, out_hw: tuple[int, int], view: View = CENTRE) -> np.ndarray:
    """Crop (or pad) base-size frames [..., C, h, w] to `out_hw` where `view` says; zoom, flip, jitter.

    A side longer than the output is cropped at the view's place (y, x); a shorter one (pad mode) is
    centred between black bars. A zoom crops 1/zoom of the output size and enlarges it.

    Returns:
        uint8 [..., C, H, W] (a new array; `frames` may be a read-only memory map).
    """
    h, w = out_hw
    n_h, n_w = frames.shape[-2:]
    zoom = max(view.zoom, 1.0)
    ch, cw = min(n_h, max(1, round(h / zoom))), min(n_w, max(1, round(w / zoom)))
    sy, sx = int(round((n_h - ch) * view.y)), int(round((n_w - cw) * view.x))
    crop = frames[..., sy : sy + ch, sx : sx + cw]
    if zoom > 1 and (ch, cw) != (h, w):
        out = _enlarge(crop, out_hw)
    else:
        out = np.zeros((*frames.shape[:-2], h, w), np.uint8)
        oy, ox = (h - ch) // 2, (w - cw) // 2  # padding is always centred
        out[..., oy : oy + ch, ox : ox + cw] = crop
    if view.flip:
        out = out[..., ::-1]
    if view.gain != 1 or view.bias:
        v = (out.astype(np.float32) - 127.5) * view.gain + 127.5 + 255 * view.bias
        out = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def _enlarge(crop: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear enlargement of uint8 [..., C, h, w] to `out_hw` (a zoomed view).

    numpy, not torch: this runs in the decoding threads, and a torch operator there opens a second
    OpenMP team that spins on the same cores as the training step (measured: zoom augmentation cost
    30 % of training throughput on 2 cores when done with F.interpolate). Same sampling as
    F.interpolate(mode="bilinear", align_corners=False).
    """
    out = crop.astype(np.float32)
    for axis, size in ((-2, out_hw[0]), (-1, out_hw[1])):
        i0, i1, w = _taps(out.shape[axis], size)
        shape = [1] * out.ndim
        shape[axis] = size
        w = w.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i1, axis=axis) * w
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of bilinear sampling with half-pixel centres (align_corners=False)."""
    src = np.maximum((np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5, 0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)
