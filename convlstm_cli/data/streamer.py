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
runs in ``workers`` threads (`convlstm_cli.data.prefetch`): lane b belongs to thread b mod workers,
which keeps one decoder open per lane and reads sequentially, holding only the last window's frames.
PyAV releases the GIL while it decodes and scales. Batches are allocated in pinned memory when CUDA is present, for
``non_blocking`` copies. With ``cache_dir`` every fully played video is stored decoded at the target
size (`cache.FrameCache`) and later plays read the memory-mapped frames instead of decoding.

**Resuming.** `state_dict` describes the position after the last batch handed to the consumer (not
the prefetch position); a streamer built with the same arguments and given that state yields exactly
the batches the original would have yielded next.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from convlstm_cli.data.cache import FrameCache
from convlstm_cli.data.prefetch import Flight, Prefetcher, StreamSpec
from convlstm_cli.data.probe import Skipped, VideoInfo, probe_video
from convlstm_cli.data.schedule import IDLE, Schedule, shard
from convlstm_cli.data.view import RESIZE_MODES, Augment, View, base_size, draw_view
from convlstm_cli.data.window import Window
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


def _relative_names(infos: list[VideoInfo]) -> list[str]:
    # Saved states name videos relative to their common folder, so a moved dataset still resumes;
    # a segment of a video is named with where it starts (clip.mp4@300).
    tag = [f"@{v.first}" if v.first else "" for v in infos]
    if len(infos) == 1:
        return [Path(infos[0].path).name + tag[0]]
    common = os.path.commonpath([os.path.abspath(os.path.dirname(v.path)) for v in infos])
    return [os.path.relpath(os.path.abspath(v.path), common) + t for v, t in zip(infos, tag)]


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
        pin_memory: Allocate batches in pinned memory (None: when CUDA is available; never without it).
        resize: How frames of another aspect ratio reach ``size``: crop, pad or stretch (`data.view`).
        random_crop: Each pass over a video crops at a random place (training); else at the centre.
        augment: What each pass's `View` may do besides (zoom, flip, reversal, jitter); None: nothing.

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
        resize: str = "stretch",
        random_crop: bool = False,
        augment: Augment | None = None,
    ):
        _check_args(batch_size, context, horizon, size, channels, stride, rank, world_size, workers, prefetch)
        if resize not in RESIZE_MODES:
            raise ConfigError(f"clip streamer: resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        self.resize, self.random_crop, self.augment = resize, random_crop, augment
        self.batch_size, self.window = batch_size, Window(context, horizon)
        self.size, self.channels, self.stride = (int(size[0]), int(size[1])), channels, stride
        self.seed, self.shuffle, self.loop, self.rank, self.world_size = seed, shuffle, loop, rank, world_size
        self.workers, self.prefetch = workers, prefetch
        # Pinning needs CUDA; without it batches stay in ordinary memory.
        self.pin_memory = torch.cuda.is_available() and (pin_memory is None or bool(pin_memory))
        self.skipped: list[Skipped] = []
        self.problems: list[Skipped] = []
        self.videos = self._select(videos)
        self._paths = [v.path for v in self.videos]
        self._lengths = [v.strided_frames(stride) for v in self.videos]
        self._names = _relative_names(self.videos)
        self._spec = self._make_spec(cache_dir)
        self._position = (self._new_schedule(fresh=True).snapshot(), {})
        self._run: Prefetcher | None = None

    def _make_spec(self, cache_dir: str | None) -> StreamSpec:
        bases = [base_size((v.height, v.width), self.size, self.resize) for v in self.videos]
        firsts = [v.first // self.stride for v in self.videos]
        return StreamSpec(
            self.batch_size, self.window, self.size, self.channels, self.stride, self.workers, self.prefetch,
            self.pin_memory, self._paths, self._lengths, FrameCache(cache_dir) if cache_dir else None,
            firsts, bases, self.resize,
        )  # fmt: skip

    def _view(self, epoch: int, video: int) -> View:
        """The view of one pass (`data.view.draw_view`): drawn for training, the centre otherwise."""
        view = draw_view(self.augment, self.seed, self.rank, epoch, video, self._lengths[video])
        return view if self.random_crop else replace(view, y=0.5, x=0.5)

    def _select(self, videos) -> list[VideoInfo]:
        infos, seen = [], set()
        for v in videos:
            path = v.name if isinstance(v, VideoInfo) else str(v)
            if path in seen:
                continue
            seen.add(path)
            try:
                infos.append(v if isinstance(v, VideoInfo) else probe_video(path))
            except VideoError as e:
                self.skipped.append(Skipped(path, e.reason))
        usable = []
        for info in sorted(infos, key=lambda i: i.name):
            n = info.strided_frames(self.stride)
            if self.window.count(n):
                usable.append(info)
            else:
                self.skipped.append(Skipped(
                    info.path, f"too short: {n} frames at stride {self.stride}, a window needs {self.window.span}"
                ))
        if not usable:
            why = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in self.skipped[:3])
            raise NoUsableVideoError(f"no usable video among {len(seen)} given ({why})")
        counts = [self.window.count(i.strided_frames(self.stride)) for i in usable]
        mine = shard([i.name for i in usable], counts, self.rank, self.world_size)
        if not mine:
            raise NoUsableVideoError(
                f"rank {self.rank} of {self.world_size} has no video: only {len(usable)} usable videos"
            )
        return [usable[i] for i in mine]

    def _new_schedule(self, fresh: bool = False) -> Schedule:
        views = self._view if self.random_crop or (self.augment is not None and self.augment.active) else None
        sched = Schedule(self._lengths, self.batch_size, self.window, self.seed, self.rank, self.shuffle, self.loop,
                         views)
        if not fresh:
            sched.restore(self._position[0])
            sched.broken = dict(self._position[1])
        return sched

    def _report(self, problem: Skipped) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    @property
    def context(self) -> int:
        return self.window.context

    @property
    def horizon(self) -> int:
        return self.window.horizon

    @property
    def epoch(self) -> int:
        """The newest epoch drawn from, as of the last batch handed out."""
        return self._position[0][0]

    def __iter__(self) -> Iterator[Batch]:
        self.close()
        schedule = self._new_schedule()
        if schedule.finished():
            schedule.new_pass()
        run = self._run = Prefetcher(self._spec, schedule, self._report)
        try:
            while (planned := run.next_batch()) is not None:
                flight, after, broken = planned
                self._position = (after, broken)  # before the yield: state_dict() right after is exact
                yield self._batch(flight, after[0])
            if not self.loop:  # the pass is over: the position becomes the start of the next one
                schedule = self._new_schedule()
                schedule.new_pass()
                self._position = (schedule.snapshot(), self._position[1])
        finally:
            run.close()
            if self._run is run:
                self._run = None

    def _batch(self, flight: Flight, epoch: int) -> Batch:
        entries = flight.entries
        reset = torch.tensor([e.reset for e in entries])
        valid = torch.tensor([e.video != IDLE for e in entries])
        if self.pin_memory:
            reset, valid = reset.pin_memory(), valid.pin_memory()
        return Batch(
            inputs=flight.inputs,
            targets=flight.targets,
            reset=reset,
            valid=valid,
            videos=[self._paths[e.video] if e.video != IDLE else None for e in entries],
            starts=[e.start for e in entries],
            epoch=epoch,
        )

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
            "lanes": [[video, pos, drawn] for video, pos, drawn in lanes],
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
        # A lane is [video, position, epoch drawn in]; states saved before views have no epoch.
        lanes = tuple((int(v), int(p), int(rest[0]) if rest else int(state["epoch"])) for v, p, *rest in state["lanes"])
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
