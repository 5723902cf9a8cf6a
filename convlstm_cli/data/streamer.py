"""ClipStreamer: batches of consecutive windows from B lanes of videos, decoded ahead in threads.

**Lanes and windows.** Each of the B lanes plays one video at a time. A window is ``context`` input
frames followed by the ``horizon`` frames after them (the targets); a lane's next window starts
``context`` frames later, so lane b's inputs in batch k+1 begin exactly where its inputs in batch k
ended, and batch k's targets are the first frames of batch k+1's inputs. A video of n strided frames
gives windows starting at 0, context, 2·context, ... while ``start + context + horizon <= n``; the
*tail* after the last window (fewer than ``context`` frames, never inputs) is dropped, and a video
shorter than one window is skipped up front (listed in ``skipped``). Positions are in strided frames.

**Queue and epochs.** When a lane's video has no full window left, the lane takes the next video from
a queue shared by all lanes and its ``reset`` flag is True in that batch. The queue of epoch e is a
permutation of this rank's videos drawn from ``(seed, rank, e)`` (index order if ``shuffle=False``).
With ``loop=True`` the queue is refilled with epoch e+1's order as soon as a lane needs a video and
epoch e's queue is empty: lanes never idle, the lanes still finishing epoch-e videos simply overlap
the first epoch-(e+1) videos, and ``Batch.epoch`` is the newest epoch drawn from so far. Each video is
drawn exactly once per epoch. With ``loop=False`` the iterator makes one pass (one epoch): lanes whose
queue is empty go idle (``valid`` False, zero frames) and the iteration ends when every lane is idle;
iterating again starts the next pass. Iterating always continues from the position after the last
batch handed out, so breaking out early and iterating again loses nothing (`rewind` restarts an epoch).

**Distributed.** With ``world_size > 1`` the usable videos are split into disjoint shares that cover
them all, balanced by number of windows (`schedule.shard`); every rank must be given the same list.

**Broken videos.** A video that cannot be opened, or that ends or breaks before the frames its probe
promised, ends that lane's video where it broke: the windows already read are kept, the lane takes
the next video (reset), the file is listed in ``problems`` and later epochs play it only up to the
break. Such breaks are deterministic, so they do not disturb resuming.

**Speed.** The schedule is planned in the consumer thread, up to ``prefetch`` batches ahead; decoding
runs in ``workers`` threads (lane b belongs to thread b mod workers, which keeps one decoder open per
lane and reads sequentially, holding only the last window's frames). PyAV releases the GIL while it
decodes and scales. Batches are allocated in pinned memory when CUDA is present, for
``non_blocking`` copies. With ``cache_dir`` every fully played video is stored decoded at the target
size (`cache.FrameCache`) and later plays read the memory-mapped frames instead of decoding.

**Resuming.** `state_dict` describes the position after the last batch handed to the consumer (not
the prefetch position); a streamer built with the same arguments and given that state yields exactly
the batches the original would have yielded next.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from convlstm_cli.data.cache import FrameCache
from convlstm_cli.data.schedule import IDLE, Entry, Schedule, shard, windows
from convlstm_cli.data.video import Skipped, VideoInfo, iter_frames, probe_video
from convlstm_cli.errors import ConfigError, InputError, NoUsableVideoError, VideoError

STATE_FORMAT = "convlstm-cli/clip-streamer/1"


@dataclass
class Batch:
    """One step of B lanes (see the module docstring).

    Attributes:
        inputs: uint8 ``[B, context, C, H, W]`` (pinned when the streamer pins memory).
        targets: uint8 ``[B, horizon, C, H, W]``: the frames right after the inputs.
        reset: bool ``[B]``: lane b starts a new video in this batch (its state must be zeroed).
        valid: bool ``[B]``: lane b holds data (False only for idle lanes at the end of a pass).
        videos: Per lane, the video's path (None when idle).
        starts: Per lane, the strided frame index of ``inputs[b, 0]`` in its video (0 when idle).
        epoch: The newest epoch whose queue this batch drew from.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    reset: torch.Tensor
    valid: torch.Tensor
    videos: list[str | None]
    starts: list[int]
    epoch: int

    def to(self, device, non_blocking: bool = True) -> Batch:
        """The batch with its tensors on ``device`` (asynchronous from pinned memory)."""
        move = {k: getattr(self, k).to(device, non_blocking=non_blocking) for k in ("inputs", "targets", "reset", "valid")}
        return replace(self, **move)


@dataclass
class _Failure:
    available: int  # strided frames that could be read before the break
    reason: str


class _LaneReader:
    """One lane's current video: an open decoder (or cached frames) read strictly forwards."""

    def __init__(self, streamer: ClipStreamer, video: int, start: int):
        s = streamer
        self.video, self.path, self.expected = video, s._paths[video], s._lengths[video]
        self.context, self.span = s.context, s.context + s.horizon
        self.next_start = self.pos = start
        self.error: str | None = None
        self.frames = self.writer = None
        self.buffer: deque[np.ndarray] = deque(maxlen=self.span)
        self.cached = s._cache.load(self.path, s.size, s.channels, s.stride) if s._cache else None
        if self.cached is None:
            self.frames = iter_frames(self.path, s.size, s.channels, s.stride, start, on_error=self._on_error)
            if s._cache is not None and start == 0:
                self.writer = s._cache.writer(self.path, s.size, s.channels, s.stride, self.expected)

    def _on_error(self, message: str) -> None:
        self.error = message

    def window(self, start: int):
        """Frames ``[start, start + span)``: an array or list of ``[C, H, W]``, or a `_Failure`."""
        if self.cached is not None:
            if start + self.span > len(self.cached):
                return _Failure(len(self.cached), f"cached frames end at {len(self.cached)}")
            self.next_start = start + self.context
            return self.cached[start : start + self.span]
        while self.pos < start + self.span:
            frame = next(self.frames, None)
            if frame is None:
                reason = self.error or f"ended after {self.pos} frames, the probe counted {self.expected}"
                return _Failure(self.pos, reason)
            if self.writer is not None:
                self.writer.write(frame)
            self.buffer.append(frame)
            self.pos += 1
        self.next_start = start + self.context
        if self.writer is not None and self.next_start + self.span > self.expected:
            self._finish_cache()  # the video's last window: only the short tail is left to decode
        return list(self.buffer)

    def _finish_cache(self) -> None:
        for frame in self.frames:
            self.writer.write(frame)
        if self.error is None:
            self.writer.commit()  # publishes only if every expected frame arrived
        else:
            self.writer.abort()
        self.writer = None

    def close(self) -> None:
        """Stop reading (an unfinished cache entry is discarded)."""
        if self.writer is not None:
            self.writer.abort()
        if self.frames is not None:
            self.frames.close()


class _Flight:
    """A planned batch being filled by the workers."""

    def __init__(self, entries: list[Entry], s: ClipStreamer):
        b, c, (h, w) = s.batch_size, s.channels, s.size
        self.entries = entries
        self.inputs = torch.empty((b, s.context, c, h, w), dtype=torch.uint8, pin_memory=s.pin_memory)
        self.targets = torch.empty((b, s.horizon, c, h, w), dtype=torch.uint8, pin_memory=s.pin_memory)
        self.done = [False] * b
        self.failures: dict[int, _Failure] = {}

    def fill(self, lane: int, frames, context: int) -> None:
        inputs, targets = self.inputs[lane].numpy(), self.targets[lane].numpy()
        if frames is None:
            inputs.fill(0)
            targets.fill(0)
            return
        for i, frame in enumerate(frames):
            if i < context:
                inputs[i] = frame
            else:
                targets[i - context] = frame


class _Run:
    """One iteration: the schedule run ahead, the batches in flight and the decoding threads."""

    def __init__(self, streamer: ClipStreamer):
        s = self.s = streamer
        self.sched = s._new_schedule()
        if self.sched.finished():
            self.sched.new_pass()
        self.cond = threading.Condition()
        self.flights: dict[int, _Flight] = {}
        self.snaps: dict[int, tuple] = {}  # schedule state before planning batch t
        self.t = self.planned = 0  # next batch to hand out / to plan
        self.exhausted = False
        self.lane_next = [0] * s.batch_size  # next batch each lane must decode
        self.error: BaseException | None = None
        self.stopped = False
        self.sync_readers: dict[int, _LaneReader] = {}
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
        self.flights[self.planned] = _Flight(entries, self.s)
        self.planned += 1

    def _replan(self, t: int) -> None:
        """Record the breaks found in batch t, then plan batches t, t+1, ... again around them."""
        flight = self.flights[t]
        for lane, failure in sorted(flight.failures.items()):
            video = flight.entries[lane].video
            self.sched.broken[video] = min(self.sched.broken.get(video, failure.available), failure.available)
            self.s._report(Skipped(self.s._paths[video], failure.reason))
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
                for lane in range(self.s.batch_size):
                    if dirty[lane] is None and new.entries[lane] != kept.entries[lane]:
                        dirty[lane] = k
                    if dirty[lane] is None:
                        new.done[lane] = kept.done[lane]
                        if lane in kept.failures:
                            new.failures[lane] = kept.failures[lane]
                        new.inputs[lane], new.targets[lane] = kept.inputs[lane], kept.targets[lane]
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

    def _read(self, readers: dict[int, _LaneReader], lane: int, entry: Entry):
        reader = readers.get(lane)
        if entry.video == IDLE:
            if reader is not None:
                readers.pop(lane).close()
            return None
        if reader is None or entry.reset or reader.video != entry.video or reader.next_start != entry.start:
            if reader is not None:
                readers.pop(lane).close()
            try:
                reader = readers[lane] = _LaneReader(self.s, entry.video, entry.start)
            except (VideoError, OSError) as e:  # gone or unreadable since it was probed
                return _Failure(0, getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e))
        return reader.window(entry.start)

    def _do(self, readers, lane: int, t: int, entry: Entry) -> None:
        frames = self._read(readers, lane, entry)
        with self.cond:
            flight = self.flights.get(t)
            if flight is None or self.lane_next[lane] != t or flight.entries[lane] != entry:
                return  # re-planned while we decoded: this result is not wanted any more
            if isinstance(frames, _Failure):
                flight.failures[lane] = frames
            else:
                flight.fill(lane, frames, self.s.context)
            flight.done[lane] = True
            self.lane_next[lane] = t + 1
            self.cond.notify_all()

    def _worker(self, lanes) -> None:
        readers: dict[int, _LaneReader] = {}
        try:
            while True:
                with self.cond:
                    while not self.stopped and (task := self._next_task(lanes)) is None:
                        self.cond.wait()
                    if self.stopped:
                        return
                self._do(readers, *task)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            with self.cond:
                self.error = self.error or e
                self.cond.notify_all()
        finally:
            for reader in readers.values():
                reader.close()

    # -- handing out (consumer thread) --------------------------------------------------------------

    def next_batch(self) -> Batch | None:
        with self.cond:
            while True:
                flight = self.flights.get(self.t)
                if flight is None:
                    return None
                while not all(flight.done) and self.error is None:
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
            after = self.snaps[t + 1]
            self.s._position = (after, dict(self.sched.broken))
        entries = flight.entries
        reset = torch.tensor([e.reset for e in entries])
        valid = torch.tensor([e.video != IDLE for e in entries])
        if self.s.pin_memory:
            reset, valid = reset.pin_memory(), valid.pin_memory()
        return Batch(
            inputs=flight.inputs,
            targets=flight.targets,
            reset=reset,
            valid=valid,
            videos=[self.s._paths[e.video] if e.video != IDLE else None for e in entries],
            starts=[e.start for e in entries],
            epoch=after[0],
        )

    def finish_pass(self) -> None:
        """After a non-looping pass: the position becomes the start of the next pass."""
        self.sched.restore(self.s._position[0])
        self.sched.new_pass()
        self.s._position = (self.sched.snapshot(), dict(self.sched.broken))

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join()
        for reader in self.sync_readers.values():
            reader.close()
        self.sync_readers.clear()


def _relative_names(paths: list[str]) -> list[str]:
    # Saved states name videos relative to their common folder, so a moved dataset still resumes.
    if len(paths) == 1:
        return [Path(paths[0]).name]
    common = os.path.commonpath([os.path.abspath(os.path.dirname(p)) for p in paths])
    return [os.path.relpath(os.path.abspath(p), common) for p in paths]


class ClipStreamer:
    """B lanes of consecutive windows from videos (see the module docstring for the semantics).

    Args:
        videos: `VideoInfo`s (from `probe_videos`) or paths (probed here). Every rank gets the same list.
        batch_size: Lanes B.
        context: Input frames per window.
        horizon: Target frames per window (the frames right after the inputs).
        size: ``(H, W)`` frames are resized to (inside FFmpeg).
        channels: 1 gray or 3 RGB.
        stride: Keep every ``stride``-th frame of each video.
        seed: Seeds the queue order of every epoch.
        shuffle: Shuffle the queue each epoch (else sorted by path).
        loop: Endless epochs (training) or one pass per iteration (evaluation).
        rank, world_size: This process's share of the videos.
        workers: Decoding threads (0 decodes in the consumer thread).
        prefetch: Batches planned and decoded ahead (the bound on the queue of ready batches).
        cache_dir: Keep decoded frames there (memory-mapped) so later epochs skip decoding.
        pin_memory: Allocate batches in pinned memory; None pins when CUDA is available.

    Attributes:
        videos: This rank's videos, sorted by path.
        skipped: Videos left out up front (unreadable, or shorter than one window).
        problems: Videos that failed while streaming (could not be opened, or broke mid-way).

    Raises:
        NoUsableVideoError: No video (or none for this rank) has a full window.
    """

    def __init__(
        self,
        videos: Sequence[VideoInfo | str],
        batch_size: int,
        context: int,
        horizon: int,
        size: tuple[int, int],
        channels: int = 1,
        stride: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        loop: bool = True,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 2,
        prefetch: int = 4,
        cache_dir: str | None = None,
        pin_memory: bool | None = None,
    ):
        _check_args(batch_size, context, horizon, size, channels, stride, rank, world_size, workers, prefetch)
        self.batch_size, self.context, self.horizon = batch_size, context, horizon
        self.size, self.channels, self.stride = (int(size[0]), int(size[1])), channels, stride
        self.seed, self.shuffle, self.loop, self.rank, self.world_size = seed, shuffle, loop, rank, world_size
        self.workers, self.prefetch = workers, prefetch
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.skipped: list[Skipped] = []
        self.problems: list[Skipped] = []
        self._lock = threading.Lock()
        self.videos = self._select(videos)
        self._paths = [v.path for v in self.videos]
        self._lengths = [v.strided_frames(stride) for v in self.videos]
        self._names = _relative_names(self._paths)
        self._cache = FrameCache(cache_dir) if cache_dir else None
        self._position = (self._new_schedule(fresh=True).snapshot(), {})
        self._run: _Run | None = None

    def _select(self, videos) -> list[VideoInfo]:
        infos, seen = [], set()
        for v in videos:
            path = v.path if isinstance(v, VideoInfo) else str(v)
            if path in seen:
                continue
            seen.add(path)
            try:
                infos.append(v if isinstance(v, VideoInfo) else probe_video(path))
            except VideoError as e:
                self.skipped.append(Skipped(path, getattr(e, "reason", str(e))))
        span = self.context + self.horizon
        usable = []
        for info in sorted(infos, key=lambda i: i.path):
            n = info.strided_frames(self.stride)
            if windows(n, self.context, self.horizon):
                usable.append(info)
            else:
                self.skipped.append(
                    Skipped(info.path, f"too short: {n} frames at stride {self.stride}, a window needs {span}")
                )
        if not usable:
            why = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in self.skipped[:3])
            raise NoUsableVideoError(f"no usable video among {len(seen)} given ({why})")
        counts = [windows(i.strided_frames(self.stride), self.context, self.horizon) for i in usable]
        mine = shard([i.path for i in usable], counts, self.rank, self.world_size)
        if not mine:
            raise NoUsableVideoError(
                f"rank {self.rank} of {self.world_size} has no video: only {len(usable)} usable videos"
            )
        return [usable[i] for i in mine]

    def _new_schedule(self, fresh: bool = False) -> Schedule:
        sched = Schedule(
            self._lengths, self.batch_size, self.context, self.horizon,
            self.seed, self.rank, self.shuffle, self.loop,
        )  # fmt: skip
        if not fresh:
            sched.restore(self._position[0])
            sched.broken = dict(self._position[1])
        return sched

    def _report(self, problem: Skipped) -> None:
        with self._lock:
            if problem not in self.problems:
                self.problems.append(problem)

    @property
    def epoch(self) -> int:
        """The newest epoch drawn from, as of the last batch handed out."""
        return self._position[0][0]

    def __iter__(self) -> Iterator[Batch]:
        self.close()
        run = self._run = _Run(self)
        try:
            while (batch := run.next_batch()) is not None:
                yield batch
            if not self.loop:
                run.finish_pass()
        finally:
            run.close()
            if self._run is run:
                self._run = None

    def close(self) -> None:
        """Stop the decoding threads of the current iteration (iterating again resumes the position)."""
        if self._run is not None:
            self._run.close()
            self._run = None

    def __enter__(self) -> ClipStreamer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def rewind(self) -> None:
        """Go back to the start of the current epoch with every lane empty (e.g. before an evaluation)."""
        self.close()
        sched = self._new_schedule()
        sched.rewind()
        self._position = (sched.snapshot(), self._position[1])

    def state_dict(self) -> dict:
        """The position after the last batch handed out, as plain Python values."""
        (epoch, order, ptr, lanes), broken = self._position
        return {
            "format": STATE_FORMAT,
            "videos": list(self._names),
            "batch_size": self.batch_size,
            "context": self.context,
            "horizon": self.horizon,
            "stride": self.stride,
            "epoch": epoch,
            "order": list(order),
            "ptr": ptr,
            "lanes": [[video, pos] for video, pos in lanes],
            "broken": [[video, frames] for video, frames in sorted(broken.items())],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict` (stops any running iteration).

        Raises:
            InputError: The state belongs to a streamer over other videos or with other window settings.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise InputError("streamer state: not a convlstm-cli clip streamer state")
        for key in ("batch_size", "context", "horizon", "stride"):
            if state[key] != getattr(self, key):
                raise InputError(f"streamer state was saved with {key}={state[key]}, this streamer has {getattr(self, key)}")
        if list(state["videos"]) != self._names:
            diff = sorted(set(state["videos"]) ^ set(self._names))[:3]
            raise InputError(
                f"streamer state lists {len(state['videos'])} videos, this streamer has {len(self._names)} "
                f"that differ (e.g. {', '.join(diff) or 'their order'}); resume with the same videos"
            )
        self.close()
        lanes = tuple((int(v), int(p)) for v, p in state["lanes"])
        snap = (int(state["epoch"]), tuple(int(i) for i in state["order"]), int(state["ptr"]), lanes)
        self._position = (snap, {int(v): int(n) for v, n in state["broken"]})


def _check_args(batch_size, context, horizon, size, channels, stride, rank, world_size, workers, prefetch):
    problems = []
    for name, value in (("batch_size", batch_size), ("context", context), ("horizon", horizon), ("stride", stride),
                        ("world_size", world_size), ("prefetch", prefetch)):  # fmt: skip
        if not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if len(size) != 2 or min(size) < 1:
        problems.append(f"size must be (H, W) with positive sides, got {size!r}")
    if channels not in (1, 3):
        problems.append(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(rank, int) or not 0 <= rank < max(world_size, 1):
        problems.append(f"rank must be in [0, world_size), got rank={rank!r}, world_size={world_size!r}")
    if workers < 0:
        problems.append(f"workers must be >= 0, got {workers!r}")
    if problems:
        raise ConfigError("clip streamer: " + "; ".join(problems))
