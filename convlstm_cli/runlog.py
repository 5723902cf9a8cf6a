"""What a training run reports: `metrics.jsonl`, optional TensorBoard, a rich progress bar and tables.

Only rank 0 logs; other ranks get a `RunLog(enabled=False)` whose methods do nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from convlstm_cli import atomic, jsonsafe


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop lines logged after `after_step` (a resumed run re-does those steps), atomically."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= after_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    atomic.write_text(path, "".join(f"{x}\n" for x in kept))


class RunLog:
    """metrics.jsonl lines, TensorBoard scalars (if installed) and the terminal view of a run."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=False)
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        self.progress: Progress | None = None
        self.task = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is an optional extra
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line (and the scalars to TensorBoard)."""
        if not self.enabled:
            return
        record = jsonsafe.clean(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)

    def start(self, total: int, done: int) -> None:
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[fps]} frames/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=done, epoch=0, loss="-", fps="-")

    def update(self, step: int, epoch: int, loss: float | None = None, fps: float | None = None) -> None:
        if self.progress is None:
            return
        fields = {"epoch": epoch}
        if loss is not None:
            fields["loss"] = f"{loss:.5f}"
        if fps is not None:
            fields["fps"] = f"{fps:,.0f}"
        self.progress.update(self.task, completed=step, **fields)
        if loss is not None and not self.console.is_terminal:
            self.console.print(f"step {step} epoch {epoch} loss {loss:.5f} {fps or 0:,.0f} frames/s")

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.enabled:
            self.console.print(*args, **kwargs)

    def eval_table(self, step: int, m: dict[str, float]) -> None:
        """Model beside the copy-last baseline, as a rich table."""
        if not self.enabled:
            return
        delta = m["val_psnr"] - m["baseline_psnr"] if m.get("val_frames") else float("nan")
        t = Table(title=f"validation at step {step} ({m.get('val_frames', 0)} held-out frames, one step ahead): "
                        f"model {delta:+.2f} dB PSNR against copy-last")
        t.add_column("", style="bold")
        for name in ("PSNR dB ↑", "SSIM ↑", "MSE ↓", "MAE ↓"):
            t.add_column(name, justify="right")
        for who, prefix in (("model", "val"), ("copy last frame", "baseline")):
            t.add_row(who, *(f"{m[f'{prefix}_{k}']:.{p}f}" for k, p in (("psnr", 2), ("ssim", 4), ("mse", 6), ("mae", 5))))
        self.console.print(t)

    def end_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def close(self) -> None:
        self.end_progress()
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class Throughput:
    """Frames per second between two log points (host clock; called only at log intervals)."""

    def __init__(self) -> None:
        self.t, self.frames = time.perf_counter(), 0

    def add(self, frames: int) -> None:
        self.frames += frames

    def rate(self) -> float:
        now = time.perf_counter()
        r = self.frames / max(now - self.t, 1e-9)
        self.t, self.frames = now, 0
        return r
