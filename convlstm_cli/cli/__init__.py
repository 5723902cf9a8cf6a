"""The `convlstm` command: a Typer app whose commands are thin.

Each command lives in its own module and only validates options, calls library functions and turns
known errors (`InputError`) into one line on stderr with exit code 2 (`with known_errors():`).
`CONVLSTM_DEBUG=1` re-raises them so the traceback shows. Heavy imports (torch, av) happen inside the
commands, so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Annotated

import typer

from convlstm_cli import __version__

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


def debug_enabled() -> bool:
    """True when CONVLSTM_DEBUG asks for tracebacks instead of one-line errors."""
    return os.environ.get("CONVLSTM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr and return the exit (code 2) for the caller to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


@contextlib.contextmanager
def known_errors() -> Iterator[None]:
    """Turn `InputError`s raised inside the block into one line and exit code 2."""
    from convlstm_cli.errors import InputError

    try:
        yield
    except InputError as e:
        if debug_enabled():
            raise
        raise fail(str(e)) from None


def main() -> None:
    """Console-script entry point."""
    app()


# Importing the command modules registers their commands on `app` (they import `app` from here).
from convlstm_cli.cli import bench, data, demo, predict, train  # noqa: E402, F401
