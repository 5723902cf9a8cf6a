"""`convlstm export RUN --format onnx|torchscript --out FILE`: the model with its state as inputs and outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlstm_cli.cli.common import known_errors


def export_command(
    checkpoint: Annotated[Path, typer.Argument(readable=False, help="Run directory (best, else last) or checkpoint file.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")],
    out: Annotated[Path, typer.Option("--out", "-o", readable=False, help="The file to write.")],
    chunk: Annotated[int, typer.Option(help="Frames per call (1 for a live feed; the graph is unrolled over them).")] = 1,
    horizon: Annotated[int | None, typer.Option(help="Frames forecast from every frame (default: the model's).")] = None,
    verify_clip: Annotated[Path | None, typer.Option("--verify", readable=False, help="Stream this clip through the "
                           "exported file, 3 chunks, and compare with PyTorch.")] = None,
) -> None:
    """Export a trained model for deployment: frames and the flattened recurrent state in, predictions and the new state out."""
    from convlstm_cli.export import export_model, verify

    with known_errors():
        meta = export_model(checkpoint, fmt, out, chunk=chunk, horizon=horizon)
        typer.echo(f"wrote {out}: {fmt}, chunk {chunk}, horizon {meta['horizon']}, frames "
                   f"{meta['frame_size'][0]}x{meta['frame_size'][1]}x{meta['channels']}, state "
                   + ", ".join(f"{n} {s}" for n, s in zip(meta["inputs"][1::2], meta["state_shapes"])))
        if verify_clip is not None:
            r = verify(out, fmt, checkpoint, verify_clip)
            typer.echo(f"verified on {verify_clip}: {r['frames']} frames in 3 chunks, largest difference from "
                       f"PyTorch {r['max_abs_diff']:.2e}, {r['ms_per_frame']:.2f} ms per frame")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("export")(export_command)
