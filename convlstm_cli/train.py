"""`convlstm train`: stateful truncated-BPTT training of the encoder-forecaster on a folder of videos.

Each lane of the batch plays one video as consecutive chunks (`ClipStreamer`); the encoder state of
lane b is carried from chunk to chunk on the device, reset when the lane starts a new video, and
detached every `train.detach_every` chunks (the TBPTT boundary). This module sets a run up (its
directory, its videos and their validation split) and hands it to the `Trainer`, which owns the
run's state and loop (`convlstm_cli.trainer`).
"""

from __future__ import annotations

import gc
import random
from pathlib import Path

from convlstm_cli import checkpoint, distributed
from convlstm_cli.config import RunConfig, dump_yaml
from convlstm_cli.data.window import Window
from convlstm_cli.device import fallback_note, resolve_device
from convlstm_cli.errors import InputError
from convlstm_cli.layout import layout_note
from convlstm_cli.runlog import RunLog, truncate_metrics
from convlstm_cli.trainer import RunResult, Trainer, TrainingDiverged

__all__ = ["RunResult", "Trainer", "TrainingDiverged", "find_videos", "prepare_run_dir", "train"]


def split_videos(videos: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out a seeded share of the videos (at least one, never all) for validation."""
    if fraction <= 0 or len(videos) < 2:
        return list(videos), []
    ordered = sorted(videos, key=lambda v: str(getattr(v, "path", v)))
    n_val = min(max(1, round(fraction * len(ordered))), len(ordered) - 1)
    val_idx = set(random.Random(seed).sample(range(len(ordered)), n_val))
    return [v for i, v in enumerate(ordered) if i not in val_idx], [ordered[i] for i in sorted(val_idx)]


def prepare_run_dir(out: Path | None, resume: Path | None, video_dir: Path) -> Path:
    """The run directory: --out, else the resumed one, else runs/<video dir name>-<n>."""
    if out is None and resume is not None:
        return resume
    if out is None:
        base = Path("runs") / (video_dir.resolve().name or "run")
        n = 1
        while Path(f"{base}-{n}").exists():
            n += 1
        out = Path(f"{base}-{n}")
    if resume is None and (out / "checkpoints" / "last.pt").exists():
        raise InputError(f"{out}: already holds a run (checkpoints/last.pt); resume it with --resume {out} "
                         "or choose another --out")
    return out


AUTO_SPLIT_VIDEOS = 8  # val_split auto: a split by video from this many videos on, tails below


def find_videos(video_dir: Path, cfg: RunConfig, log: RunLog):
    """Probe the folder(s); report skipped files and the validation split; return (train, val) lists.

    `--val-dir` validates on its own videos. Otherwise `data.val_split` decides: ``videos`` holds out
    a share of whole videos, ``tail`` the end of every video (`split_tails`), and ``auto`` holds out
    videos when there are at least `AUTO_SPLIT_VIDEOS` of them, tails when there are fewer (a
    handful of clips, or one long video, has too few videos to hold any out).
    """
    from convlstm_cli.data import sources
    from convlstm_cli.data.probe import probe_videos

    d = cfg.data
    sources.configure(d.layout, d.range)
    probe = probe_videos(video_dir, min_frames=Window.of(cfg).min_frames(d.stride))
    report_skipped(probe, log)
    if d.val_dir:
        val_probe = probe_videos(d.val_dir, min_frames=d.context + 1)
        report_skipped(val_probe, log)
        val = val_probe.videos[: d.val_max_videos]
        log.print(f"validation: {len(val)} videos of --val-dir {d.val_dir}")
        return probe.videos, val
    mode = d.val_split
    if mode == "auto":
        mode = "videos" if len(probe.videos) >= AUTO_SPLIT_VIDEOS else "tail"
    if mode == "videos":
        train, val = split_videos(probe.videos, d.val_fraction, cfg.train.seed)
        how = f"{len(val[: d.val_max_videos])} of {len(probe.videos)} videos held out (data.val_split videos)"
    else:
        train, val = split_tails(probe.videos, d.val_tail, cfg)
        frames = sum(v.frames for v in val[: d.val_max_videos])
        how = (f"the last {d.val_tail:.0%} of each of {len(val)} videos, {frames} frames never trained on "
               f"(data.val_split tail)")
    log.print(f"validation: {how}" if val else "no validation videos (data.val_fraction is 0, or the videos are "
              "too short to split): no best.pt; pass --val-dir to validate")
    return train, val[: d.val_max_videos]


def split_tails(videos: list, share: float, cfg: RunConfig) -> tuple[list, list]:
    """Train on the first (1 − share) of every video and validate on the rest, disjointly.

    The cut is a multiple of the stride; a training window never reaches past it (the training
    segment ends there), and the validation segment starts there. A video too short for a training
    window before the cut, or for a validation window after it, is trained on whole instead.
    """
    window, stride = Window.of(cfg), cfg.data.stride
    train, val = [], []
    for v in videos:
        cut = int(round(v.frames * (1 - share))) // stride * stride
        head, tail = v.segment(0, cut), v.segment(cut, v.frames - cut)
        if window.count(head.strided_frames(stride)) and tail.strided_frames(stride) > cfg.data.context:
            train.append(head)
            val.append(tail)
        else:
            train.append(v)
    return train, val


def report_skipped(probe, log: RunLog) -> None:
    for note in probe.notes:
        log.print(note)
    for s in probe.skipped:
        log.print(f"[yellow]skipped[/] {s.path}: {s.reason}")
    if probe.skipped:
        log.print(f"{len(probe.videos)} usable videos, {len(probe.skipped)} skipped")


def train(video_dir: str | Path, cfg: RunConfig, out: str | Path | None = None,
          resume: checkpoint.ResumePoint | None = None, console=None) -> RunResult:
    """Train on every usable video in `video_dir` and return where the run stands.

    Args:
        video_dir: folder of videos (searched recursively).
        cfg: resolved run config (when resuming, built from the checkpoint's config: see the CLI).
        out: run directory (default runs/<folder>-<n>; with `resume` and no `out`, the resumed one).
        resume: `checkpoint.resume_point(run_dir)`: continue from that checkpoint exactly.
    """
    video_dir = Path(video_dir)
    run_dir = prepare_run_dir(Path(out) if out else None, resume.run_dir if resume else None, video_dir)
    info = distributed.init(resolve_device(cfg.train.device).type)
    log = RunLog(run_dir, enabled=info.is_main, tensorboard=cfg.train.tensorboard, console=console)
    trainer, clean = None, False
    try:
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        train_videos, val_videos = find_videos(video_dir, cfg, log)
        trainer = Trainer(cfg, train_videos, val_videos, run_dir, info, log)
        if info.is_main:  # after the trainer has resolved what it chose (train.channels_last)
            dump_yaml(cfg, run_dir / "config.yaml")
        if resume is not None:
            note = trainer.load_state_dict(resume.payload)
            log.print(f"resumed {resume.path} at step {trainer.step_count} ({note})")
            if info.is_main:
                truncate_metrics(run_dir / "metrics.jsonl", trainer.step_count)
        fell_back = fallback_note(cfg.train.precision, trainer.precision, trainer.device)
        log.print(
            f"training on {len(train_videos)} videos ({len(val_videos)} for validation), device "
            f"{trainer.device.type}, precision {trainer.precision}{f' ({fell_back})' if fell_back else ''}, "
            f"layout {layout_note(trainer.layout)}, {info.world_size} process(es) → {run_dir}"
        )
        result = trainer.run(video_dir)
        clean = True
        return result
    finally:
        log.close()
        if trainer is not None:
            trainer.close()
        del trainer
        gc.collect()  # DDP and its reducer hold the process group: free them before leaving it
        distributed.shutdown(info, clean)
