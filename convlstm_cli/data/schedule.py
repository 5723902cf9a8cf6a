"""The deterministic half of the clip streamer: which video and window each lane plays, batch by batch.

Nothing here decodes. `Schedule` is a small state machine over video *indices* and their lengths in
strided frames; the streamer runs it in the consumer thread and hands each batch's entries to its
decoding threads. Because the schedule depends only on its state (epoch, queue order, queue pointer,
each lane's video and position) and the lengths, saving that state and restoring it reproduces the
batch sequence exactly. See `convlstm_cli.data.streamer` for the semantics in words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from convlstm_cli.data.view import CENTRE, View
from convlstm_cli.data.window import Window
from convlstm_cli.errors import NoUsableVideoError

IDLE = -1


@dataclass(frozen=True)
class Entry:
    """One lane in one batch: play the window starting at ``start`` of ``video``, seen through ``view``."""

    video: int  # IDLE (-1) when the lane holds no data
    start: int
    reset: bool
    view: View = CENTRE


def shard(names: list[str], counts: list[int], rank: int, world_size: int) -> list[int]:
    """Indices of the videos that ``rank`` streams: disjoint across ranks, together all of them.

    Greedy balancing: videos in order of decreasing work (then name) each go to the rank with the
    least work so far (ties to the lowest rank), so ranks get similar numbers of windows.

    Args:
        names: Video names (paths), the same list on every rank.
        counts: Work per video (e.g. windows), aligned with ``names``.
        rank, world_size: This process's place.

    Returns:
        Sorted indices into ``names``.
    """
    load = [0] * world_size
    mine = []
    for i in sorted(range(len(names)), key=lambda i: (-counts[i], names[i])):
        r = min(range(world_size), key=lambda r: (load[r], r))
        load[r] += max(counts[i], 1)
        if r == rank:
            mine.append(i)
    return sorted(mine)


class Schedule:
    """Lanes that play videos from a shared, seeded, shuffled queue as consecutive windows.

    Args:
        lengths: Strided frame count of each video.
        lanes: Batch size B.
        window: The window geometry; lanes advance ``window.context`` frames per batch.
        seed, salt: The queue of epoch e is a permutation drawn from ``(seed, salt, e)``.
        shuffle: False keeps the videos in index order.
        loop: True refills the queue forever; False plays one pass, then lanes go idle.
        views: ``views(epoch, video)`` is the `View` of that pass (None: every pass at the centre).
    """

    def __init__(self, lengths, lanes: int, window: Window, seed=0, salt=0, shuffle=True, loop=True,
                 views: Callable[[int, int], View] | None = None):
        self.lengths = list(lengths)
        self.window = window
        self.seed, self.salt, self.shuffle, self.loop = seed, salt, shuffle, loop
        self.views = views
        self.broken: dict[int, int] = {}  # video -> frames that could really be read
        self.epoch, self.ptr = 0, 0
        self.order = self.order_for(0)
        # (video, start of its next window, epoch it was drawn in: which pass, hence which view)
        self.lanes: list[tuple[int, int, int]] = [(IDLE, 0, 0)] * lanes

    def order_for(self, epoch: int) -> tuple[int, ...]:
        """The queue of one epoch."""
        n = len(self.lengths)
        if not self.shuffle:
            return tuple(range(n))
        return tuple(int(i) for i in np.random.default_rng([self.seed, self.salt, epoch]).permutation(n))

    def length(self, video: int) -> int:
        """Usable strided frames of a video (less than probed if it broke while streaming)."""
        return min(self.lengths[video], self.broken.get(video, self.lengths[video]))

    def _draw(self) -> int:
        drawn = 0
        while True:
            if self.ptr >= len(self.order):
                if not self.loop:
                    return IDLE
                self.epoch, self.ptr = self.epoch + 1, 0
                self.order = self.order_for(self.epoch)
            video = self.order[self.ptr]
            self.ptr += 1
            if self.window.count(self.length(video)):
                return video
            drawn += 1
            if drawn > len(self.order):
                raise NoUsableVideoError("every video failed while streaming (see the streamer's problems)")

    def step(self) -> list[Entry] | None:
        """Plan the next batch; None when a non-looping pass is over (every lane idle)."""
        entries = []
        for b, (video, pos, drawn) in enumerate(self.lanes):
            reset = video == IDLE or not self.window.fits(pos, self.length(video))
            if reset:
                video, pos, drawn = self._draw(), 0, self.epoch
            entries.append(Entry(video, pos, reset and video != IDLE, self.view(drawn, video)))
            self.lanes[b] = (video, pos + self.window.context if video != IDLE else 0, drawn)
        return None if all(e.video == IDLE for e in entries) else entries

    def view(self, epoch: int, video: int) -> View:
        """How the pass of `epoch` over `video` is seen."""
        return CENTRE if video == IDLE or self.views is None else self.views(epoch, video)

    def finished(self) -> bool:
        """True when a non-looping pass has nothing left to play."""
        return not self.loop and self.ptr >= len(self.order) and all(
            v == IDLE or not self.window.fits(p, self.length(v)) for v, p, _ in self.lanes
        )

    def new_pass(self) -> None:
        """Start the next epoch with empty lanes (used after a non-looping pass)."""
        self.epoch, self.ptr = self.epoch + 1, 0
        self.order = self.order_for(self.epoch)
        self.lanes = [(IDLE, 0, 0)] * len(self.lanes)

    def rewind(self) -> None:
        """Back to the start of the current epoch, lanes empty."""
        self.ptr = 0
        self.lanes = [(IDLE, 0, 0)] * len(self.lanes)

    def snapshot(self) -> tuple:
        """The state, cheap to take per batch (the order tuple is shared, not copied)."""
        return self.epoch, self.order, self.ptr, tuple(self.lanes)

    def restore(self, snap: tuple) -> None:
        """Go back to a `snapshot`."""
        self.epoch, self.order, self.ptr, lanes = snap
        self.lanes = list(lanes)
