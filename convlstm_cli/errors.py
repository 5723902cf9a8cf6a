"""Errors the CLI turns into one line: exit code 2 for bad input, 1 for anything unexpected.

Library code raises `InputError` (or a subclass) for anything the user can fix: a bad file, a bad
config key, a directory with no usable video. The CLI prints `error: <message>` and exits 2; any
other exception is a bug, printed as `internal error: <message>` with exit 1. `CONVLSTM_DEBUG=1`
re-raises both so the traceback shows.
"""

from __future__ import annotations

import os


def debug_enabled() -> bool:
    """True when CONVLSTM_DEBUG asks for tracebacks (and FFmpeg's own log lines) instead of one line."""
    return os.environ.get("CONVLSTM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class InputError(Exception):
    """A problem with the user's input: names the file or key and the reason, in one line."""


class ConfigError(InputError, ValueError):
    """A configuration key or value is wrong (unknown key, wrong type, out of range)."""


class CheckpointError(InputError):
    """A file is not a usable convlstm-cli checkpoint."""


class VideoError(InputError):
    """A video file cannot be used (unreadable, too short, no video stream, ...).

    Attributes:
        path: The file.
        reason: Why, in a few words (the message is ``"{path}: {reason}"``).
    """

    path: str
    reason: str

    def __init__(self, path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class NoUsableVideoError(InputError):
    """A directory holds no usable video."""
