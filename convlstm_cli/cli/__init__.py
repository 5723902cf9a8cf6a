"""The `convlstm` command: a Typer app whose commands are thin.

Each command lives in its own module, validates its options, calls library functions and turns
errors into one line (`common.known_errors`: exit 2 for bad input, 1 for anything unexpected).
Each module registers its commands on the app it is given (`register(app)`), so no command imports
this root. Heavy imports (torch, av) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from convlstm_cli import __version__
from convlstm_cli.cli import bench, data, demo, evaluate, export, predict, train
from convlstm_cli.cli.common import debug_enabled, fail, internal_error, is_click, known_errors

__all__ = ["app", "debug_enabled", "fail", "known_errors", "main"]

app = typer.Typer(
    name="convlstm",
    help="Video next-frame prediction with stateful ConvLSTM encoder-forecasters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convlstm-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, run and benchmark ConvLSTM encoder-forecasters on folders of videos."""


for _module in (train, predict, evaluate, export, data, demo, bench):
    _module.register(app)


def main() -> None:
    """Console-script entry point: every error is one line (exit 2 for usage, 1 for a bug, 130 for Ctrl-C)."""
    try:
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - no traceback reaches a user
        if is_click(e, "UsageError"):  # a wrong option or argument: one line and a pointer to --help
            where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "convlstm"
            typer.echo(f"error: {e.format_message()} (see {where} --help)", err=True)
            sys.exit(2)
        if is_click(e, "ClickException"):
            typer.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        if debug_enabled():
            raise
        sys.exit(internal_error(e).exit_code)
    sys.exit(code if isinstance(code, int) else 0)
