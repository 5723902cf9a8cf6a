"""`convlstm bench`: validate options, call `convlstm_cli.bench.run_bench`, print tables, write JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from convlstm_cli.cli.common import fail, known_errors


def bench_command(
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    quick: Annotated[bool, typer.Option("--quick", help="Tiny models, few repeats, no compile: a smoke run (~10 s on a quiet 2-core CPU).")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the full report to this JSON file.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: one per core).")] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="Include the torch.compile rung (adds minutes of compilation on a CPU).")] = True,
) -> None:
    """Measure training and inference speed, MFU, memory, streaming vs sliding windows, and the data path."""
    from rich.console import Console

    from convlstm_cli.bench import run_bench
    from convlstm_cli.bench.report import render, write_json

    if threads is not None and threads < 1:
        raise fail(f"--threads {threads}: must be at least 1")
    err = Console(stderr=True)
    with known_errors():
        report = run_bench(device, quick=quick, threads=threads, compile=compile,
                           log=lambda msg: err.print(f"[dim]bench: {msg}[/dim]"))
    # Piped output (a log, a README) gets room for the tables instead of rich's 80-column default.
    render(report, Console() if sys.stdout.isatty() else Console(width=120))
    if json_path is not None:
        write_json(report, json_path)
        typer.echo(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("bench")(bench_command)
