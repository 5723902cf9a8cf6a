"""What every command shares: one-line errors with their exit codes, and the debug switch.

- A known error (`InputError`: a bad file, option or config key) prints ``error: <message>`` on
  stderr and exits 2.
- Anything else is a bug: it prints ``internal error: <type>: <message> (CONVLSTM_DEBUG=1 shows the
  traceback)`` and exits 1. No traceback ever reaches a user unless they ask for it.
- ``CONVLSTM_DEBUG=1`` re-raises both, so the traceback shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from convlstm_cli.errors import debug_enabled

DEBUG_HINT = "CONVLSTM_DEBUG=1 shows the traceback"


def is_click(e: BaseException, name: str) -> bool:
    """Whether `e` is click's exception `name` (UsageError, ClickException, ...).

    Matched by class name: recent typer versions vendor their own copy of click (`typer._click`),
    older ones use the click package, and the classes differ between the two.
    """
    return any(cls.__name__ == name for cls in type(e).__mro__)


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr and return the exit (code 2) for the caller to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def internal_error(e: BaseException) -> typer.Exit:
    """Print the one line of an unexpected error on stderr and return the exit (code 1)."""
    text = " ".join(str(e).split())[:300]
    typer.echo(f"internal error: {type(e).__name__}{': ' + text if text else ''} ({DEBUG_HINT})", err=True)
    return typer.Exit(code=1)


@contextlib.contextmanager
def known_errors() -> Iterator[None]:
    """Turn exceptions raised inside the block into one line: exit 2 for input errors, 1 for bugs."""
    from convlstm_cli.errors import InputError

    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except InputError as e:
        if debug_enabled():
            raise
        raise fail(str(e)) from None
    except Exception as e:  # noqa: BLE001 - the catch-all that keeps tracebacks from users
        if debug_enabled() or is_click(e, "ClickException"):
            raise
        raise internal_error(e) from None
