"""`convlstm train VIDEO_DIR`: validate options, resolve the config, call `convlstm_cli.train.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlstm_cli.cli.common import fail, known_errors


def train_command(
    video_dir: Annotated[Path, typer.Argument(readable=False, help="Folder of videos (searched recursively).")],
    config: Annotated[Path | None, typer.Option("--config", "-c", readable=False, help="YAML config file or a sample config name (quickstart, default, gpu).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", readable=False, help="Run directory (default runs/<folder>-<n>).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Total optimizer steps of the run (a resumed run continues to this total).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Stop after this many passes over the videos (whichever comes first).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (model init, video order).")] = None,
    log_every: Annotated[int | None, typer.Option("--log-every", help="Steps between log lines.")] = None,
    resume: Annotated[Path | None, typer.Option(readable=False, help="Continue the run in this directory from its last checkpoint.")] = None,
    val_dir: Annotated[Path | None, typer.Option("--val-dir", readable=False, help="Validation videos (default: a held-out share).")] = None,
    stateless: Annotated[bool, typer.Option("--stateless", help="Reset the hidden state every chunk (for comparison).")] = False,
) -> None:
    """Train a ConvLSTM encoder-forecaster on every video in VIDEO_DIR, carrying each lane's state."""
    from convlstm_cli.checkpoint import resume_point
    from convlstm_cli.config import load_config, resume_config
    from convlstm_cli.train import train

    with known_errors():
        if not video_dir.exists():
            raise fail(f"{video_dir}: no such file or directory")
        overrides = {
            "train.device": device, "train.max_steps": max_steps, "train.epochs": epochs,
            "train.seed": seed, "train.log_every": log_every, "train.stateless": True if stateless else None,
            "data.val_dir": str(val_dir) if val_dir else None,
        }
        point = resume_point(resume) if resume else None
        if point is not None:  # the original command with --resume appended is fine (same config)
            cfg = resume_config(point.payload["config"], config, set_ or [], **overrides)
        else:
            cfg = load_config(config, set_ or [], **overrides)
        try:
            result = train(video_dir, cfg, out=out, resume=point)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; the last checkpoint is kept as it was
            typer.echo("aborted: the last saved checkpoint is unchanged", err=True)
            raise typer.Exit(code=130) from None
    if result.interrupted:
        raise typer.Exit(code=130)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("train")(train_command)
