"""`convlstm train`: stateful truncated-BPTT training of the encoder-forecaster on a folder of videos.

Each lane of the batch plays one video as consecutive chunks (`ClipStreamer`); the encoder state of
lane b is carried from chunk to chunk on the device, reset when the lane starts a new video, and
detached every `train.detach_every` chunks (the TBPTT boundary). This module sets a run up (its
directory, its videos and their validation split) and hands it to the `Trainer`, which owns the
run's state and loop (`convlstm_cli.trainer`).
"""

from __future__ import annotations

import random
from pathlib import Path

from convlstm_cli import checkpoint, distributed
from convlstm_cli.config import RunConfig, dump_yaml
from convlstm_cli.data.window import Window
from convlstm_cli.device import resolve_device
from convlstm_cli.errors import InputError
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


def find_videos(video_dir: Path, cfg: RunConfig, log: RunLog):
    """Probe the folder(s); report skipped files; return (train, val) VideoInfo lists."""
    from convlstm_cli.data.probe import probe_videos

    probe = probe_videos(video_dir, min_frames=Window.of(cfg).min_frames(cfg.data.stride))
    report_skipped(probe, log)
    if cfg.data.val_dir:
        val_probe = probe_videos(cfg.data.val_dir, min_frames=cfg.data.context + 1)
        report_skipped(val_probe, log)
        return probe.videos, val_probe.videos[: cfg.data.val_max_videos]
    train, val = split_videos(probe.videos, cfg.data.val_fraction, cfg.train.seed)
    if not val:
        log.print("no validation videos (data.val_fraction is 0 or there is one video): no best.pt; "
                  "pass --val-dir to validate")
    return train, val[: cfg.data.val_max_videos]


def report_skipped(probe, log: RunLog) -> None:
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
    try:
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(cfg, run_dir / "config.yaml")
        train_videos, val_videos = find_videos(video_dir, cfg, log)
        trainer = Trainer(cfg, train_videos, val_videos, run_dir, info, log)
        if resume is not None:
            note = trainer.load_state_dict(resume.payload)
            log.print(f"resumed {resume.path} at step {trainer.step_count} ({note})")
            if info.is_main:
                truncate_metrics(run_dir / "metrics.jsonl", trainer.step_count)
        log.print(
            f"training on {len(train_videos)} videos ({len(val_videos)} for validation), device "
            f"{trainer.device.type}, precision {trainer.precision}, {info.world_size} process(es) → {run_dir}"
        )
        return trainer.run(video_dir)
    finally:
        log.close()
        distributed.shutdown(info)
