"""`convlstm predict CLIP --checkpoint RUN_DIR|FILE`: next-frame prediction or a forecast on one clip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlstm_cli.cli.common import known_errors

METRIC_ROWS = (("psnr", "PSNR (dB) ↑", "{:.2f}"), ("ssim", "SSIM ↑", "{:.4f}"),
               ("mse", "MSE per pixel ↓", "{:.5f}"), ("mae", "MAE per pixel ↓", "{:.4f}"),
               ("mse_sum", "MSE per frame (sum, OpenSTL) ↓", "{:.2f}"), ("mae_sum", "MAE per frame (sum, OpenSTL) ↓", "{:.1f}"))


def _fmt(fmt: str, v) -> str:
    return "—" if v is None else fmt.format(v)


def summary(result) -> list:
    """Rich renderables describing a `PredictResult`: facts, a model-vs-baseline table, per lead time."""
    from rich.table import Table

    d = result.to_dict()
    what = (f"forecast of {d['horizon']} frames after {d['context']} observed" if d["mode"] == "forecast"
            else f"streaming, t+1 … t+{d['horizon']} from every frame")
    h, w = d["size"]
    facts = [
        f"[bold]{d['clip']}[/]: {d['frames']} frames at {w}x{h}, {what}",
        f"checkpoint {d['checkpoint']} (step {d['checkpoint_step']}), {d['device']} {d['precision']}, "
        f"{d['seconds']:.1f} s ({d['frames'] / max(d['seconds'], 1e-9):.0f} frames/s)",
        *(f"[yellow]note:[/] {n}" for n in d["notes"]),
    ]
    title = f"{d['scored_frames']} scored frames" + (" (t+1)" if d["mode"] == "stream" else "")
    table = Table(title=title, title_justify="left")
    for col in ("metric", "model", "copy-last baseline", "model − baseline"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    window = d.get("window")
    if window:
        table.add_column(f"stateless window W={window['window']}", justify="right")
    for key, label, fmt in METRIC_ROWS:
        m, b = d["model"][key], d["baseline"][key]
        diff = None if m is None or b is None else m - b
        extra = [_fmt(fmt, window[key])] if window else []
        table.add_row(label, _fmt(fmt, m), _fmt(fmt, b), _fmt("{:+" + fmt[2:], diff), *extra)
    out = [*facts, table]
    if len(d["by_step"]) > 1:
        steps = Table(title="by lead time", title_justify="left")
        for col in ("frame", "scored", "PSNR model", "PSNR baseline", "SSIM model", "SSIM baseline"):
            steps.add_column(col, justify="right")
        for s in d["by_step"]:
            steps.add_row(f"t+{s['step']}", str(s["frames"]), _fmt("{:.2f}", s["model"]["psnr"]),
                          _fmt("{:.2f}", s["baseline"]["psnr"]), _fmt("{:.4f}", s["model"]["ssim"]),
                          _fmt("{:.4f}", s["baseline"]["ssim"]))
        out.append(steps)
    if d["outputs"]:
        out.append("wrote " + ", ".join(d["outputs"].values()))
    return out


def predict(
    clip: Annotated[Path, typer.Argument(readable=False, help="Video clip to predict on (any length, size or colour).")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", readable=False,
                                             help="Run directory (best, else last checkpoint) or checkpoint file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", readable=False,
                                             help="Output directory (default: predictions/<clip name>).")] = None,
    context: Annotated[int | None, typer.Option(help="Forecast mode: observe N frames, then forecast --horizon.")] = None,
    horizon: Annotated[int | None, typer.Option(help="Frames forecast (default: the model's horizon).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 where supported), bf16 or fp32.")] = "auto",
    chunk: Annotated[int, typer.Option(help="Frames per model call while streaming (memory, not results).")] = 64,
    max_frames: Annotated[int | None, typer.Option(help="Read at most this many frames of the clip.")] = None,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Write prediction.mp4.")] = True,
    gif: Annotated[bool, typer.Option("--gif/--no-gif", help="Write prediction.gif.")] = True,
    png: Annotated[bool, typer.Option("--png/--no-png", help="Write forecast.png.")] = True,
    gif_frames: Annotated[int, typer.Option(help="The GIF holds the first N frames (the mp4 holds all).")] = 300,
    error_gain: Annotated[float, typer.Option(help="Error panels show |prediction − truth| × this.")] = 4.0,
    stateless_window: Annotated[int | None, typer.Option("--stateless-window", help="Also score the model run as "
                                "a stateless sliding window of W frames on the same frames.")] = None,
) -> None:
    """Predict the next frames of CLIP with a trained model, beside the truth and the copy-last baseline.

    Writes prediction.mp4 and prediction.gif (truth | prediction | error), forecast.png and metrics.json.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from convlstm_cli.predict import predict_clip

    with known_errors():
        if gif_frames < 1 or error_gain <= 0:
            from convlstm_cli.errors import InputError

            raise InputError("--gif-frames must be at least 1 and --error-gain positive")
        out = out if out is not None else Path("predictions") / clip.stem
        err = Console(stderr=True)
        bar = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=err, transient=True, disable=not err.is_terminal)
        task = bar.add_task("predict", total=None)
        with bar:
            result = predict_clip(
                clip, checkpoint, out, context=context, horizon=horizon, device=device, precision=precision,
                chunk=chunk, max_frames=max_frames, video=video, gif=gif, png=png, gif_max_frames=gif_frames,
                error_gain=error_gain, progress=lambda done, total: bar.update(task, completed=done, total=total),
                stateless_window=stateless_window,
            )
    console = Console()
    for item in summary(result):
        console.print(item)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("predict")(predict)
