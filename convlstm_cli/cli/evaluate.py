"""`convlstm eval RUN DATA_DIR`: one checkpoint on a folder, stateful against stateless against copy-last."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlstm_cli.cli.common import known_errors

LABELS = {"stateful": "stateful stream (state carried)", "window": "stateless window of W={w} frames",
          "reset": "state reset every {c} frames", "copy-last": "copy last frame"}


def table(report: dict):
    """A rich table: one row per mode, PSNR / SSIM overall (and on memory frames where marked)."""
    from rich.table import Table

    from convlstm_cli.compare import delta_text

    memory = report["memory_frames"] > 0
    t = Table(title=f"{report['frames']} scored frames in {report['videos']} videos, one step ahead"
                    + (f"; {report['memory_frames']} of them need memory" if memory else ""), title_justify="left")
    cols = ["mode", "PSNR dB", "Δ vs copy-last", "SSIM", "MSE"]
    cols += ["PSNR memory frames", "Δ memory", "PSNR other frames", "Δ other"] if memory else []
    for c in cols:
        t.add_column(c, justify="left" if c == "mode" else "right")
    for mode, r in report["modes"].items():
        a = r["all"]
        row = [LABELS[mode].format(w=report["window"], c=report["context"]), f"{a['psnr']:.2f}",
               delta_text(a.get("delta_psnr")), f"{a['ssim']:.4f}", f"{a['mse']:.6f}"]
        if memory:
            for g in ("memory", "ordinary"):
                row += [f"{r[g]['psnr']:.2f}", delta_text(r[g].get("delta_psnr"))] if g in r else ["—", "—"]
        t.add_row(*row)
    return t


def eval_command(
    checkpoint: Annotated[Path, typer.Argument(readable=False, help="Run directory (best, else last) or checkpoint file.")],
    data_dir: Annotated[Path, typer.Argument(readable=False, help="Folder of videos (or one video) to score on.")],
    window: Annotated[int | None, typer.Option(help="W of the stateless sliding window (default: the training context).")] = None,
    tail: Annotated[float | None, typer.Option(help="Score only the last share of each video (e.g. 0.25), from its cut.")] = None,
    modes: Annotated[str, typer.Option(help="Comma-separated: stateful, window, reset, copy-last.")] = "stateful,window,reset,copy-last",
    json_path: Annotated[Path | None, typer.Option("--json", readable=False, help="Also write the report to this JSON file.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 where supported), bf16 or fp32.")] = "auto",
    chunk: Annotated[int, typer.Option(help="Frames per model call (memory, not results).")] = 64,
) -> None:
    """Score a checkpoint on a folder: carried state, a stateless sliding window, per-chunk resets, copy-last."""
    import json

    from rich.console import Console

    from convlstm_cli import atomic, jsonsafe
    from convlstm_cli.compare import evaluate_folder

    err = Console(stderr=True)
    with known_errors():
        report = evaluate_folder(checkpoint, data_dir, window=window, tail=tail,
                                 modes=tuple(m.strip() for m in modes.split(",") if m.strip()), device=device,
                                 precision=precision, chunk=chunk,
                                 progress=lambda name: err.print(f"[dim]scoring {name}[/dim]") if err.is_terminal else None)
        Console().print(table(report))
        for note in report["notes"]:
            err.print(f"[yellow]note:[/] {note}")
        if json_path is not None:
            atomic.write_text(json_path, json.dumps(jsonsafe.clean(report), indent=1) + "\n")
            typer.echo(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("eval")(eval_command)
