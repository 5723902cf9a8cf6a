"""The window geometry every part of the data path shares, computed in one place.

A window is ``context`` input frames followed by the ``horizon`` frames after them (the targets):
``span = context + horizon`` frames. A lane advances ``context`` frames per window, so window k of a
video starts at ``k·context`` and the last one ends at or before the video's end. Positions are in
strided frames (with a temporal stride s, strided frame k is decoded frame k·s).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """``context`` inputs + ``horizon`` targets; consecutive windows of a lane overlap by ``horizon``."""

    context: int
    horizon: int

    @property
    def span(self) -> int:
        """Frames a window reads."""
        return self.context + self.horizon

    def count(self, length: int) -> int:
        """Number of windows in a video of ``length`` strided frames."""
        return 0 if length < self.span else (length - self.span) // self.context + 1

    def fits(self, start: int, length: int) -> bool:
        """Whether a window starting at ``start`` ends inside a video of ``length`` frames."""
        return start + self.span <= length

    def min_frames(self, stride: int = 1) -> int:
        """Decoded frames a video needs (as probed) to be kept for training at this stride."""
        return self.span * stride

    @classmethod
    def of(cls, cfg) -> Window:
        """The training window of a `RunConfig`: ``data.context`` inputs, ``model.horizon`` targets."""
        return cls(cfg.data.context, cfg.model.horizon)
