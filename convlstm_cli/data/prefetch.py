"""Decoding ahead for `ClipStreamer`: per-lane readers, batches in flight, worker threads.

The consumer thread plans batches with a `Schedule`, up to ``prefetch`` ahead, and takes completed
ones; worker thread w decodes the lanes b with ``b mod workers == w``, each lane from one decoder
opened on its video and read strictly forwards (`LaneReader`), and writes the windows into the
planned batch (`Flight`) under the lock. A lane whose video breaks is reported by the worker; the
consumer then records the break in the schedule and plans again from that batch, keeping the lanes
whose plan did not change together with the frames already decoded for them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from convlstm_cli.data.cache import FrameCache
from convlstm_cli.data.probe import Skipped
from convlstm_cli.data.schedule import IDLE, Entry, Schedule
from convlstm_cli.data.video import iter_frames
from convlstm_cli.data.view import CENTRE, View, fit
from convlstm_cli.data.window import Window
from convlstm_cli.errors import VideoError


@dataclass(frozen=True)
class StreamSpec:
    """What the decoding side needs to know about a streamer."""

    batch_size: int
    window: Window
    size: tuple[int, int]  # the training size (H, W)
    channels: int
    stride: int
    workers: int
    prefetch: int
    pin_memory: bool
    paths: list[str]
    lengths: list[int]  # strided frames per video (or segment), as probed
    cache: FrameCache | None
    firsts: list[int]  # strided frame where each segment starts in its file (0: the whole video)
    bases: list[tuple[int, int]]  # the size each video is scaled to before the view crops it
    resize: str = "stretch"


@dataclass
class Failure:
    """A lane's window could not be read: how far its video really goes, and why."""

    available: int  # strided frames that could be read before the break
    reason: str


class LaneReader:
    """One lane's pass over a video: an open decoder (or cached frames) read strictly forwards.

    Frames arrive at the video's base size (`data.view.base_size`) and leave through the lane's
    `View` (crop, zoom, flip, brightness and contrast) at the training size. A reversed pass reads
    the whole segment first and serves it backwards.
    """

    def __init__(self, s: StreamSpec, video: int, start: int, view: View = CENTRE):
        self.video, self.path, self.expected = video, s.paths[video], s.lengths[video]
        self.geom, self.size = s.window, s.size
        self.view = replace(view, zoom=1.0) if s.resize == "pad" else view  # pad mode never zooms
        self.next_start = self.pos = start
        self.error: str | None = None
        self.frames = self.writer = None
        self.buffer: deque[np.ndarray] = deque(maxlen=self.geom.span)
        base, first = s.bases[video], s.firsts[video]
        key = (self.path, base, s.channels, s.stride)
        self.cached = s.cache.load(*key, first=first) if s.cache else None
        if self.cached is not None and len(self.cached) != self.expected:
            self.cached = None  # an entry of another segment of this file: decode (and replace it)
        if self.cached is None:
            self.frames = iter_frames(self.path, self.size, s.channels, s.stride, first + (0 if view.reverse else start),
                                      on_error=self._on_error, resize=s.resize, base=True)
            if s.cache is not None and (start == 0 or view.reverse):
                try:
                    self.writer = s.cache.writer(*key, self.expected, first=first)
                except OSError:
                    pass  # the cache only saves time: a full or read-only disk just means no caching
        self.backwards = self._read_all() if view.reverse else None

    def _to_cache(self, frame: np.ndarray) -> None:
        try:
            self.writer.write(frame)
        except OSError:
            self.writer.abort()
            self.writer = None

    def _on_error(self, message: str) -> None:
        self.error = message

    def _read_all(self) -> np.ndarray:
        """The whole segment, last frame first (for a reversed pass)."""
        if self.cached is not None:
            return self.cached[::-1]
        frames = []
        for frame in self.frames:
            frames.append(frame)
            if self.writer is not None:
                self._to_cache(frame)
        self._finish_cache()
        return np.stack(frames[::-1]) if frames else np.zeros((0, 1, 1, 1), np.uint8)

    def window(self, start: int):
        """Frames ``[start, start + span)`` through the view: an array ``[span, C, H, W]``, or a `Failure`."""
        span = self.geom.span
        source = self.backwards if self.backwards is not None else self.cached
        if source is not None:
            if not self.geom.fits(start, len(source)):
                why = self.error or f"cached frames end at {len(source)}"
                return Failure(len(source), why)
            self.next_start = start + self.geom.context
            return fit(source[start : start + span], self.size, self.view)
        while self.pos < start + span:
            frame = next(self.frames, None)
            if frame is None:
                reason = self.error or f"ended after {self.pos} frames, the probe counted {self.expected}"
                return Failure(self.pos, reason)
            if self.writer is not None:
                self._to_cache(frame)
            self.buffer.append(frame)
            self.pos += 1
        self.next_start = start + self.geom.context
        if self.writer is not None and not self.geom.fits(self.next_start, self.expected):
            self._finish_cache()  # the video's last window: only the short tail is left to decode
        return fit(np.stack(self.buffer), self.size, self.view)

    def _finish_cache(self) -> None:
        for frame in self.frames:
            if self.writer is None:
                return
            self._to_cache(frame)
        if self.writer is None:
            return
        try:
            if self.error is None:
                self.writer.commit()  # publishes only if every expected frame arrived
            else:
                self.writer.abort()
        except OSError:
            self.writer.abort()
        self.writer = None

    def close(self) -> None:
        """Stop reading (an unfinished cache entry is discarded)."""
        if self.writer is not None:
            self.writer.abort()
        if self.frames is not None:
            self.frames.close()


class Flight:
    """A planned batch being filled by the workers."""

    def __init__(self, entries: list[Entry], s: StreamSpec):
        b, c, (h, w) = s.batch_size, s.channels, s.size
        self.entries = entries
        self.inputs = torch.empty((b, s.window.context, c, h, w), dtype=torch.uint8, pin_memory=s.pin_memory)
        self.targets = torch.empty((b, s.window.horizon, c, h, w), dtype=torch.uint8, pin_memory=s.pin_memory)
        self.done = [False] * b
        self.failures: dict[int, Failure] = {}

    def fill(self, lane: int, frames, context: int) -> None:
        inputs, targets = self.inputs[lane].numpy(), self.targets[lane].numpy()
        if frames is None:
            inputs.fill(0)
            targets.fill(0)
            return
        inputs[:], targets[:] = frames[:context], frames[context:]


class Prefetcher:
    """One iteration of a streamer: the schedule run ahead, the batches in flight, the threads.

    Args:
        spec: The streamer's settings and videos.
        schedule: Positioned where the iteration starts; the prefetcher runs it ahead.
        report: Called (in the consumer thread) with each video that broke while streaming.
    """

    def __init__(self, spec: StreamSpec, schedule: Schedule, report: Callable[[Skipped], None]):
        s = self.s = spec
        self.sched, self.report = schedule, report
        self.cond = threading.Condition()
        self.flights: dict[int, Flight] = {}
        self.snaps: dict[int, tuple] = {}  # schedule state before planning batch t
        self.t = self.planned = 0  # next batch to hand out / to plan
        self.exhausted = False
        self.lane_next = [0] * s.batch_size  # next batch each lane must decode
        self.error: BaseException | None = None
        self.stopped = False
        self.sync_readers: dict[int, LaneReader] = {}
        for _ in range(s.prefetch):
            self._plan()
        n = min(s.workers, s.batch_size)
        self.threads = [
            threading.Thread(target=self._worker, args=(range(w, s.batch_size, n),), daemon=True, name=f"clip-decode-{w}")
            for w in range(n)
        ]
        for thread in self.threads:
            thread.start()

    # -- planning (consumer thread, under the lock) -------------------------------------------------

    def _plan(self) -> None:
        if self.exhausted:
            return
        self.snaps[self.planned] = self.sched.snapshot()
        entries = self.sched.step()
        if entries is None:
            self.exhausted = True
            return
        self.flights[self.planned] = Flight(entries, self.s)
        self.planned += 1

    def _replan(self, t: int) -> None:
        """Record the breaks found in batch t, then plan batches t, t+1, ... again around them."""
        flight = self.flights[t]
        for lane, failure in sorted(flight.failures.items()):
            video = flight.entries[lane].video
            self.sched.broken[video] = min(self.sched.broken.get(video, failure.available), failure.available)
            self.report(Skipped(self.s.paths[video], failure.reason))
        old = {k: self.flights.pop(k) for k in range(t, self.planned)}
        self.sched.restore(self.snaps[t])
        self.planned, self.exhausted = t, False
        dirty: list[int | None] = [None] * self.s.batch_size
        for k in range(t, t + max(len(old), self.s.prefetch)):
            self._plan()
            if self.exhausted:
                break
            new = self.flights[k]
            if k in old:  # keep the lanes whose plan is unchanged, with the frames already decoded
                kept = old[k]
                new.inputs, new.targets = kept.inputs, kept.targets  # workers write only under the lock
                for lane in range(self.s.batch_size):
                    if dirty[lane] is None and new.entries[lane] != kept.entries[lane]:
                        dirty[lane] = k
                    if dirty[lane] is None:
                        new.done[lane] = kept.done[lane]
                        if lane in kept.failures:
                            new.failures[lane] = kept.failures[lane]
        for lane, k in enumerate(dirty):
            if k is not None:  # from k on this lane plays something else: decode it again
                self.lane_next[lane] = min(self.lane_next[lane], k)
        self.cond.notify_all()

    # -- decoding (worker threads) ------------------------------------------------------------------

    def _next_task(self, lanes) -> tuple[int, int, Entry] | None:
        ready = [(self.lane_next[b], b) for b in lanes if self.lane_next[b] in self.flights]
        if not ready:
            return None
        t, lane = min(ready)
        return lane, t, self.flights[t].entries[lane]

    def _read(self, readers: dict[int, LaneReader], lane: int, entry: Entry):
        reader = readers.get(lane)
        if entry.video == IDLE:
            if reader is not None:
                readers.pop(lane).close()
            return None
        if reader is None or entry.reset or reader.video != entry.video or reader.next_start != entry.start:
            if reader is not None:
                readers.pop(lane).close()
            try:
                reader = readers[lane] = LaneReader(self.s, entry.video, entry.start, entry.view)
            except (VideoError, OSError) as e:  # gone or unreadable since it was probed
                return Failure(0, getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e))
        return reader.window(entry.start)

    def _do(self, readers, lane: int, t: int, entry: Entry) -> None:
        frames = self._read(readers, lane, entry)
        with self.cond:
            flight = self.flights.get(t)
            if flight is None or self.lane_next[lane] != t or flight.entries[lane] != entry:
                return  # re-planned while we decoded: this result is not wanted any more
            if isinstance(frames, Failure):
                flight.failures[lane] = frames
            else:
                flight.fill(lane, frames, self.s.window.context)
            flight.done[lane] = True
            self.lane_next[lane] = t + 1
            self.cond.notify_all()

    def _worker(self, lanes) -> None:
        readers: dict[int, LaneReader] = {}
        try:
            while True:
                with self.cond:
                    while not self.stopped and (task := self._next_task(lanes)) is None:
                        self.cond.wait()
                    if self.stopped:
                        return
                self._do(readers, *task)
        except BaseException as e:  # handed to the consumer, which re-raises it
            with self.cond:
                self.error = self.error or e
                self.cond.notify_all()
        finally:
            for reader in readers.values():
                reader.close()

    # -- handing out (consumer thread) --------------------------------------------------------------

    def next_batch(self) -> tuple[Flight, tuple, dict[int, int]] | None:
        """The next completed batch, the schedule state after it and the breaks known; None at the end."""
        with self.cond:
            while True:
                flight = self.flights.get(self.t)
                if flight is None:
                    return None
                while not all(flight.done) and self.error is None:
                    if self.stopped:
                        raise RuntimeError("this iteration was closed (the streamer was iterated anew or closed)")
                    if self.threads:
                        self.cond.wait()
                    else:
                        self._do(self.sync_readers, *self._next_task(range(self.s.batch_size)))
                if self.error is not None:
                    raise self.error
                if not flight.failures:
                    break
                self._replan(self.t)
            t = self.t
            del self.flights[t], self.snaps[t]
            self.t += 1
            self._plan()
            self.cond.notify_all()
            return flight, self.snaps[t + 1], dict(self.sched.broken)

    def close(self) -> None:
        """Stop and join the threads; close every decoder."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join()
        for reader in self.sync_readers.values():
            reader.close()
        self.sync_readers.clear()
