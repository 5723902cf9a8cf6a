"""`convlstm demo`: generate sample videos, train the quickstart config, predict a held-out clip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlstm_cli.cli.common import known_errors


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Demo directory (videos, run, prediction).")] = Path("demo"),
    config: Annotated[str, typer.Option("--config", "-c", help="Config file or sample config name.")] = "quickstart",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    num: Annotated[int, typer.Option(help="Number of training videos to generate.")] = 24,
) -> None:
    """Generate moving-shapes videos, train (2-8 minutes on a 2-core CPU), predict a held-out clip (GIF + table)."""
    from convlstm_cli.config import load_config
    from convlstm_cli.demo import run_demo

    with known_errors():
        cfg = load_config(config, set_ or [], **{"train.device": device})
        run_demo(out, cfg, num_videos=num)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("demo")(demo_command)
