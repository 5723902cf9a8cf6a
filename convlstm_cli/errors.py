"""Errors the CLI turns into one line and exit code 2.

Library code raises `InputError` (or a subclass) for anything the user can fix: a bad file, a bad
config key, a directory with no usable video. The CLI prints `error: <message>` and exits 2; with
`CONVLSTM_DEBUG=1` it re-raises so the traceback shows. Anything else is a bug and is re-raised.
"""

from __future__ import annotations


class InputError(Exception):
    """A problem with the user's input: names the file or key and the reason, in one line."""


class ConfigError(InputError, ValueError):
    """A configuration key or value is wrong (unknown key, wrong type, out of range)."""


class CheckpointError(InputError):
    """A file is not a usable convlstm-cli checkpoint."""


class VideoError(InputError):
    """A video file cannot be used (unreadable, too short, no video stream, ...)."""


class NoUsableVideoError(InputError):
    """A directory holds no usable video."""
