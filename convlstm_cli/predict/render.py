"""Pictures of predictions: labelled truth | prediction | error panels, and files that show them.

Frames arrive as uint8 [C, H, W] (C = 1 or 3). A `PanelLayout` composes one output image per frame:
three panels side by side, each with a text label above it, enlarged by an integer factor (nearest
neighbour) so small frames stay visible. The error panel is |prediction − truth| averaged over
channels, multiplied by `error_gain` (the label says so) so small errors are visible. Gray clips give
gray images, RGB clips RGB images.

The composed images are written by `convlstm_cli.data.video.VideoWriter` (mp4 and GIF). Labels are
drawn once per layout with Pillow's built-in default font (no font file is read from disk). PyAV and
Pillow are imported lazily.
"""

from __future__ import annotations

import math

import numpy as np

GAP = 4  # pixels between panels
HEADER = 14  # label strip above each panel
BACKGROUND = 32  # gray level of headers and placeholders
SEPARATOR = 96  # gray level of the gaps between panels (lighter: dark frames stay apart)
MIN_PANEL_WIDTH = 128  # small frames are enlarged to at least this width


def text_image(text: str, width: int, height: int = HEADER, value: int = 255) -> np.ndarray:
    """`text` drawn on a background strip, uint8 [height, width] (clipped at the right edge)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (width, height), BACKGROUND)
    font = ImageFont.load_default()
    top = font.getbbox(text)[1] if text else 0
    ImageDraw.Draw(img).text((2, max(0, (height - 10) // 2 - top)), text, font=font, fill=value)
    return np.asarray(img, dtype=np.uint8).copy()


def to_hwc(frame: np.ndarray) -> np.ndarray:
    """uint8 [C, H, W] → [H, W, C]."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(frame), 0, -1))


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour ×scale of [H, W, ...]."""
    if scale == 1:
        return image
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def error_image(pred: np.ndarray, truth: np.ndarray, gain: float) -> np.ndarray:
    """|pred − truth| averaged over channels, × gain, clipped: uint8 [C, H, W] pair → [H, W]."""
    err = np.abs(pred.astype(np.float32) - truth.astype(np.float32)).mean(axis=0)
    return np.clip(err * gain + 0.5, 0, 255).astype(np.uint8)


class PanelLayout:
    """Composes labelled side-by-side panels for frames of one size.

    Args:
        height, width, channels: size of the frames (uint8 [channels, height, width]).
        labels: one label per panel, e.g. ("truth", "prediction t+1", "|error| x4").
        scale: integer enlargement (default: enough to make a panel MIN_PANEL_WIDTH wide).
    """

    def __init__(self, height: int, width: int, channels: int, labels: tuple[str, ...], scale: int | None = None):
        self.h, self.w, self.c = height, width, channels
        self.scale = scale or max(1, math.ceil(MIN_PANEL_WIDTH / width))
        self.ph, self.pw = height * self.scale, width * self.scale
        self.n = len(labels)
        out_w = self.n * self.pw + (self.n - 1) * GAP
        out_h = HEADER + self.ph
        # Even sizes: yuv420p (mp4) subsamples chroma by 2 in both directions.
        self.out_h, self.out_w = out_h + out_h % 2, out_w + out_w % 2
        shape = (self.out_h, self.out_w) if channels == 1 else (self.out_h, self.out_w, 3)
        self.blank = np.full(shape, SEPARATOR, np.uint8)
        for i, label in enumerate(labels):
            x = i * (self.pw + GAP)
            strip = text_image(label, self.pw)
            self.blank[:HEADER, x : x + self.pw] = strip if channels == 1 else strip[..., None]
        self.placeholder = self._placeholder()

    def _placeholder(self) -> np.ndarray:
        """A panel that says there is no ground truth, [ph, pw] or [ph, pw, 3]."""
        p = np.full((self.ph, self.pw), BACKGROUND, np.uint8)
        y = max(0, self.ph // 2 - HEADER // 2)
        p[y : y + HEADER] = text_image("no ground truth", self.pw, value=160)[: self.ph - y]
        return p if self.c == 1 else np.repeat(p[..., None], 3, axis=-1)

    def panel(self, frame: np.ndarray | None) -> np.ndarray:
        """uint8 [C, H, W] (or [H, W]) → an enlarged panel in the layout's colour; None → placeholder."""
        if frame is None:
            return self.placeholder
        img = frame if frame.ndim == 2 else to_hwc(frame)
        if self.c == 1:
            img = img if img.ndim == 2 else img[..., 0]
        elif img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        return enlarge(img, self.scale)

    def compose(self, panels: list[np.ndarray | None]) -> np.ndarray:
        """One output image from one frame per panel (None: no ground truth)."""
        out = self.blank.copy()
        for i, frame in enumerate(panels):
            x = i * (self.pw + GAP)
            out[HEADER : HEADER + self.ph, x : x + self.pw] = self.panel(frame)
        return out

    def triptych(self, truth: np.ndarray | None, pred: np.ndarray, gain: float) -> np.ndarray:
        """truth | prediction | error, the error panel blank ('no ground truth') without truth."""
        err = None if truth is None else error_image(pred, truth, gain)
        return self.compose([truth, pred, err])


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image [H, W] (gray) or [H, W, 3] (RGB), via PyAV's png encoder."""
    import av

    fmt = "gray" if image.ndim == 2 else "rgb24"
    ctx = av.CodecContext.create("png", "w")
    ctx.height, ctx.width = image.shape[:2]
    ctx.pix_fmt = fmt
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode()])


def strip_image(columns: list[tuple[np.ndarray | None, np.ndarray]], labels: list[str], gain: float,
                channels: int, title: str = "") -> np.ndarray:
    """A forecast strip: one column per forecast frame, rows truth / forecast / error.

    Args:
        columns: (truth or None, forecast) uint8 [C, H, W] pairs, one per column.
        labels: column labels (e.g. "t+1").
        gain: error gain (as in the panels).
        channels: 1 or 3.
        title: a line of text above the strip.

    Returns:
        uint8 [H, W] or [H, W, 3].
    """
    c, h, w = columns[0][1].shape
    rows = ("truth", "forecast", f"|error| x{gain:g}")
    layout = PanelLayout(h, w, channels, tuple(labels))
    side = max(64, 8 * max(len(r) for r in rows))
    out = []
    for r, name in enumerate(rows):
        frames = [t if r == 0 else p if r == 1 else (None if t is None else error_image(p, t, gain))
                  for t, p in columns]
        img = layout.compose(frames)
        if r:  # column labels only above the first row
            img = img[HEADER:]
        head = text_image(name, side, img.shape[0])
        out.append(np.concatenate([head if channels == 1 else np.repeat(head[..., None], 3, -1), img], axis=1))
    img = np.concatenate(out, axis=0)
    if title:
        head = text_image(title, img.shape[1])
        img = np.concatenate([head if channels == 1 else np.repeat(head[..., None], 3, -1), img], axis=0)
    return img
