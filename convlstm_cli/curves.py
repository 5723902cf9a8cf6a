"""`curves.png` of a run: the training loss, and validation PSNR of the model beside copy-last.

Drawn with Pillow (already a dependency) rather than matplotlib: one small chart does not justify a
plotting library of tens of MB that also writes a font cache into the user's home directory. The
file is rewritten (atomically) at every validation, so a user can look at it while the run goes on.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from convlstm_cli import atomic

WIDTH, HEIGHT = 960, 380
MARGIN = (64, 34, 18, 40)  # left, top, right, bottom of each panel's plot area
COLOURS = {"loss": (31, 119, 180), "model": (214, 39, 40), "baseline": (90, 90, 90), "best": (44, 160, 44)}
Series = Sequence[tuple[float, float]]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"


class Panel:
    """One chart: a frame, axes with ticks, a title, and lines in data coordinates."""

    def __init__(self, draw, box: tuple[int, int, int, int], x_range, y_range, title: str, log_y: bool = False):
        self.draw, self.log_y = draw, log_y
        left, top, right, bottom = box
        self.x0, self.y0 = left + MARGIN[0], top + MARGIN[1]
        self.x1, self.y1 = right - MARGIN[2], bottom - MARGIN[3]
        self.xr = x_range
        self.yr = tuple(math.log10(v) for v in y_range) if log_y else y_range
        draw.text((self.x0, top + 8), title, fill=(0, 0, 0))
        draw.rectangle((self.x0, self.y0, self.x1, self.y1), outline=(0, 0, 0))
        for x in _ticks(*self.xr):
            px = self._px(x, self.yr[0])[0]
            draw.line((px, self.y0, px, self.y1), fill=(232, 232, 232))
            draw.text((px - 10, self.y1 + 6), _label(x), fill=(0, 0, 0))
        for y in _ticks(*self.yr):
            py = self._px(self.xr[0], y)[1]
            draw.line((self.x0, py, self.x1, py), fill=(232, 232, 232))
            draw.text((left + 4, py - 6), _label(10**y if log_y else y), fill=(0, 0, 0))
        draw.text(((self.x0 + self.x1) // 2 - 10, self.y1 + 22), "step", fill=(0, 0, 0))

    def _px(self, x: float, y: float) -> tuple[float, float]:
        (xa, xb), (ya, yb) = self.xr, self.yr
        fx = (x - xa) / (xb - xa or 1)
        fy = (y - ya) / (yb - ya or 1)
        return self.x0 + fx * (self.x1 - self.x0), self.y1 - fy * (self.y1 - self.y0)

    def line(self, series: Series, colour, name: str, row: int, marker: bool = False) -> None:
        pts = [self._px(x, math.log10(y) if self.log_y else y) for x, y in series]
        if len(pts) > 1:
            self.draw.line(pts, fill=colour, width=2)
        for px, py in pts if marker or len(pts) == 1 else ():
            self.draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        self.draw.text((self.x1 - 190, self.y0 + 6 + 14 * row), f"— {name}", fill=colour)


def plot_curves(records: list[dict], path: str | Path) -> Path:
    """Draw the run's curves from its metrics.jsonl records into `path` (PNG, atomically)."""
    from PIL import Image, ImageDraw

    losses = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float)) and r["loss"] > 0]
    evals = [r for r in records if isinstance(r.get("val_psnr"), (int, float))
             and isinstance(r.get("baseline_psnr"), (int, float))]
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    steps = [s for s, _ in losses] + [r["step"] for r in evals] or [0, 1]
    x_range = (0.0, float(max(max(steps), 1)))
    if losses:
        ys = [v for _, v in losses]
        left = Panel(draw, (0, 0, WIDTH // 2, HEIGHT), x_range, (min(ys) / 1.2, max(ys) * 1.2), "training loss", True)
        left.line(losses, COLOURS["loss"], "loss (log scale)", 0)
    if evals:
        model = [(r["step"], r["val_psnr"]) for r in evals]
        base = [(r["step"], r["baseline_psnr"]) for r in evals]
        ys = [v for _, v in model + base]
        right = Panel(draw, (WIDTH // 2, 0, WIDTH, HEIGHT), x_range, (min(ys) - 0.5, max(ys) + 0.5),
                      "validation PSNR (dB)")
        right.line(base, COLOURS["baseline"], "copy last frame", 0, marker=True)
        right.line(model, COLOURS["model"], "model", 1, marker=True)
        best = max(model, key=lambda p: p[1])
        right.line([best], COLOURS["best"], f"best: step {best[0]}", 2, marker=True)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return atomic.write_bytes(path, buf.getvalue())
