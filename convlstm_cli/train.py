"""`convlstm train`: stateful truncated-BPTT training of the encoder-forecaster on a folder of videos.

Each lane of the batch plays one video as consecutive chunks (`ClipStreamer`); the encoder state of
lane b is carried from chunk to chunk on the device, reset when the lane starts a new video, and
detached every `train.detach_every` chunks (the TBPTT boundary). The loop is four named parts:
`Trainer.__init__` (build), `Trainer.step`, `evaluate` (convlstm_cli.evaluate) and `Trainer.save`.

No host synchronisation happens per step: losses accumulate on the device and are read at log
intervals; a non-finite loss or gradient skips the optimizer update on the device (fused AdamW's
`found_inf`, as torch's GradScaler does) and is counted there.
"""

from __future__ import annotations

import math
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from convlstm_cli import checkpoint, distributed
from convlstm_cli.config import RunConfig, dump_yaml, to_dict
from convlstm_cli.device import autocast, resolve_compile, resolve_device, resolve_precision
from convlstm_cli.errors import InputError
from convlstm_cli.evaluate import evaluate, to_unit
from convlstm_cli.model.forecaster import EncoderForecaster
from convlstm_cli.model.state import StreamState
from convlstm_cli.runlog import RunLog, Throughput, truncate_metrics


class TrainingDiverged(InputError):
    """Too many consecutive non-finite steps: the run stops (the last good checkpoint is kept)."""


@dataclass
class RunResult:
    run_dir: Path
    step: int
    interrupted: bool = False
    last_eval: dict[str, float] | None = None
    best_psnr: float | None = None


def lr_lambda(cfg: RunConfig):
    """Linear warm-up to lr, then cosine decay to lr · min_lr_ratio at max_steps."""
    t = cfg.train

    def f(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        span = max(t.max_steps - t.warmup_steps, 1)
        progress = min((step - t.warmup_steps) / span, 1.0)
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def split_videos(videos: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out a seeded share of the videos (at least one, never all) for validation."""
    if fraction <= 0 or len(videos) < 2:
        return list(videos), []
    ordered = sorted(videos, key=lambda v: str(getattr(v, "path", v)))
    n_val = min(max(1, round(fraction * len(ordered))), len(ordered) - 1)
    val_idx = set(random.Random(seed).sample(range(len(ordered)), n_val))
    return [v for i, v in enumerate(ordered) if i not in val_idx], [ordered[i] for i in sorted(val_idx)]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopFlag:
    """SIGINT/SIGTERM set a flag the loop checks after each step; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopFlag:
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread (e.g. inside some test runners): no handlers
            self.previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


class Trainer:
    """All stateful parts of a run; `state_dict()` of this object is the checkpoint."""

    def __init__(self, cfg: RunConfig, train_videos: list, val_videos: list, run_dir: Path,
                 info: distributed.DistInfo, log: RunLog) -> None:
        from convlstm_cli.data.streamer import ClipStreamer

        self.cfg, self.val_videos, self.run_dir, self.info, self.log = cfg, val_videos, run_dir, info, log
        t, d = cfg.train, cfg.data
        self.device = resolve_device(t.device)
        if self.device.type == "cuda" and info.enabled:
            self.device = torch.device("cuda", info.local_rank)
        self.precision = resolve_precision(t.precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick kernels once
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        self.model = EncoderForecaster.from_config(cfg.model).to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: torch.nn.Module = self.model
        if info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        # CUDA graphs ("reduce-overhead") replay a whole forward and backward as one launch. That pays
        # where a step is launch-bound (many small per-time-step kernels: small models and batches);
        # the gpu sample config at 16 lanes on an H100 trained at the same speed either way.
        self.compiled = resolve_compile(t.compile, self.device)
        self.graphs = self.compiled and t.compile_mode == "reduce-overhead" and self.device.type == "cuda"
        if self.compiled:
            mode = t.compile_mode if t.compile_mode != "reduce-overhead" or self.graphs else "default"
            self.net = torch.compile(self.net, mode=mode)
        fused = self._fused_ok()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                                           **({"fused": True} if fused else {}))
        self.fused = fused
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.streamer = ClipStreamer(
            train_videos, batch_size=d.batch_size, context=d.context, horizon=cfg.model.horizon,
            size=d.hw(), channels=d.channels, stride=d.stride, seed=t.seed, shuffle=True, loop=True,
            rank=info.rank, world_size=info.world_size, workers=d.workers, prefetch=d.prefetch,
            cache_dir=(d.cache_dir or str(run_dir / "cache")) if d.cache else None,
            pin_memory=self.device.type == "cuda",
        )
        self.state = StreamState()
        self.step_count, self.epoch = 0, 0
        self.best_psnr: float | None = None
        self.bad_total = torch.zeros((), device=self.device)  # counted on the device: no sync per step
        self.bad_run = torch.zeros((), device=self.device)
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_n = 0
        self.problems_reported = 0

    def _fused_ok(self) -> bool:
        try:
            p = torch.nn.Parameter(torch.zeros(1, device=self.device))
            torch.optim.AdamW([p], fused=True)
            return True
        except (RuntimeError, TypeError, ValueError):
            return False

    # -- one optimizer step ------------------------------------------------------------------------
    def loss_fn(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.cfg.train.loss == "l1":
            return torch.nn.functional.l1_loss(pred, target)
        return torch.nn.functional.mse_loss(pred, target)

    def step(self, batches: list) -> Tensor:
        """One optimizer step over consecutive chunks (`train.detach_every` of them, the TBPTT window).

        Each chunk starts from the carried state (lanes reset where the streamer says so); the loss
        is averaged over the chunks, back-propagated through all of them, and the state is detached
        afterwards. An update whose loss or gradient is not finite is skipped on the device.
        """
        t = self.cfg.train
        losses = []
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()  # one training iteration of CUDA-graph replays
        for batch in batches:
            batch = batch.to(self.device)  # asynchronous copies from pinned memory
            inputs, targets = to_unit(batch.inputs, self.device), to_unit(batch.targets, self.device)
            state = StreamState() if t.stateless else self.state.reset(batch.reset)
            # Zeros made here, outside a compiled net: it then sees one kind of state and compiles once.
            self.state = self.model.initial_state(inputs, state)
            if self.graphs:  # a replay overwrites the graphs' outputs: feed the carried state in as a copy
                self.state = self.state.clone()
            with autocast(self.device, self.precision):
                pred, self.state = self.net(inputs, self.state)
            losses.append(self.loss_fn(pred.float(), targets))
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.state = self.state.detach()  # TBPTT boundary: keep the values, drop the graph
        max_norm = t.grad_clip if t.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        bad = ~(torch.isfinite(norm) & torch.isfinite(loss))
        if self.fused:
            self.optimizer.found_inf = bad.float()  # fused AdamW skips the update where this is 1
            self.optimizer.step()
        elif not bool(bad):  # fallback: one host sync per step where fused AdamW is missing
            self.optimizer.step()
        self.scheduler.step()
        self.bad_total += bad
        self.bad_run = (self.bad_run + 1) * bad
        self.loss_sum += torch.where(bad, torch.zeros_like(loss), loss.detach())
        self.loss_n += 1
        self.step_count += 1
        return loss.detach()

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This rank's view: model, optimizer, scheduler, counters, RNG, streamer and stream state."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step_count,
            "epoch": self.epoch,
            "best_psnr": self.best_psnr,
            "bad_steps": int(self.bad_total.item()),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "world_size": self.info.world_size,
        }

    def load_state_dict(self, sd: dict[str, Any], streams: list | None, states: list | None) -> str:
        """Restore a checkpoint; returns a note on how the streams were restored."""
        self.model.load_state_dict(sd["model"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.scheduler.load_state_dict(sd["scheduler"])
        self.step_count, self.epoch = int(sd["step"]), int(sd["epoch"])
        self.best_psnr = sd.get("best_psnr")
        self.bad_total.fill_(float(sd.get("bad_steps", 0)))
        set_rng_state(sd["rng"])
        saved_world = int(sd.get("world_size", 1))
        if streams is not None and saved_world == self.info.world_size and len(streams) == saved_world:
            self.streamer.load_state_dict(streams[self.info.rank])
            self.state = StreamState().load_state_dict(states[self.info.rank], self.device) if states else StreamState()
            return "exact: streams and hidden states restored"
        # A different world size re-shards the videos: positions and hidden states cannot carry over.
        return (f"checkpoint was written by {saved_world} process(es), this run has {self.info.world_size}: "
                f"weights, optimizer and schedule continue; video streams restart at epoch {self.epoch} "
                "with fresh hidden states")

    def save(self, name: str = "last") -> Path | None:
        """Write checkpoints/<name>.pt (rank 0) with every rank's streamer and stream state."""
        streams = distributed.gather(self.info, self.streamer.state_dict())
        states = distributed.gather(self.info, self.state.state_dict())
        if not self.info.is_main:
            return None
        for p in self.model.parameters():
            if not torch.isfinite(p).all():
                raise TrainingDiverged(
                    f"{self.run_dir}: weights became non-finite at step {self.step_count}; "
                    "not writing a checkpoint (the previous one is kept)"
                )
        payload = {**self.state_dict(), "streamers": streams, "stream_states": states}
        ckdir = self.run_dir / "checkpoints"
        path = checkpoint.save(ckdir / f"{name}.pt", payload)
        if name == "last" and self.cfg.train.keep_last > 0:
            checkpoint.copy(path, ckdir / f"step-{self.step_count:08d}.pt")
            steps = sorted(ckdir.glob("step-*.pt"))
            for old in steps[: -self.cfg.train.keep_last]:
                old.unlink(missing_ok=True)
        return path


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

    window = cfg.data.context + cfg.model.horizon
    probe = probe_videos(video_dir, min_frames=window * cfg.data.stride)
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
            p = resume.payload
            note = trainer.load_state_dict(p, p.get("streamers"), p.get("stream_states"))
            log.print(f"resumed {resume.path} at step {trainer.step_count} ({note})")
            if info.is_main:
                truncate_metrics(run_dir / "metrics.jsonl", trainer.step_count)
        log.print(
            f"training on {len(train_videos)} videos ({len(val_videos)} for validation), device "
            f"{trainer.device.type}, precision {trainer.precision}, {info.world_size} process(es) → {run_dir}"
        )
        return run_loop(trainer, video_dir)
    finally:
        log.close()
        distributed.shutdown(info)


def run_loop(tr: Trainer, video_dir: Path) -> RunResult:
    """Step until max_steps / epochs / a stop signal; validate and save on schedule and at the end."""
    t, log, info = tr.cfg.train, tr.log, tr.info
    frames_per_step = tr.cfg.data.batch_size * tr.cfg.data.context * t.detach_every * info.world_size
    speed, last_eval, interrupted = Throughput(), None, False
    log.start(t.max_steps, tr.step_count)
    stream = iter(tr.streamer)
    try:
        with StopFlag() as stop:
            while tr.step_count < t.max_steps:
                batches = [next(stream) for _ in range(t.detach_every)]
                tr.epoch = batches[-1].epoch
                if t.epochs is not None and batches[0].epoch >= t.epochs:
                    break
                tr.step(batches)
                speed.add(frames_per_step)
                report_problems(tr)
                s = tr.step_count
                if s % t.log_every == 0 or s == t.max_steps:
                    log_step(tr, speed.rate())
                if tr.val_videos and s % t.eval_every == 0 and s < t.max_steps:
                    last_eval = validate(tr)
                if s % t.save_every == 0:
                    tr.save("last")
                # Ranks must agree on the step they stop at; in DDP that costs a collective, so it
                # is asked every few steps rather than every step (a signal then finishes ≤ 10 steps).
                if (not info.enabled or s % min(t.log_every, 10) == 0) and distributed.any_true(
                    info, stop.requested, tr.device
                ):
                    interrupted = True
                    break
    finally:
        tr.streamer.close()
        log.end_progress()
    if tr.loss_n:
        log_step(tr, speed.rate())
    if not interrupted and tr.val_videos and (last_eval is None or last_eval.get("step") != tr.step_count):
        last_eval = validate(tr)
    tr.save("last")
    if interrupted:
        log.print(f"interrupted at step {tr.step_count}: saved {tr.run_dir / 'checkpoints' / 'last.pt'}\n"
                  f"resume with: convlstm train {video_dir} --resume {tr.run_dir}")
    else:
        log.print(f"done: {tr.step_count} steps; checkpoints in {tr.run_dir / 'checkpoints'}")
    return RunResult(tr.run_dir, tr.step_count, interrupted, last_eval, tr.best_psnr)


def report_problems(tr: Trainer) -> None:
    """Name each video that broke while streaming (its lane kept the frames read before the break)."""
    problems = tr.streamer.problems
    for p in problems[tr.problems_reported:]:
        tr.log.print(f"[yellow]video problem[/] {p.path}: {p.reason}")
        tr.log.write({"step": tr.step_count, "video_problem": p.path, "reason": p.reason})
    tr.problems_reported = len(problems)


def log_step(tr: Trainer, fps: float) -> None:
    """Read the device-side sums (the only host sync of the loop) and write one metrics line."""
    if tr.loss_n == 0:
        return
    loss = float(tr.loss_sum.item()) / tr.loss_n
    bad_run = int(tr.bad_run.item())
    record = {"step": tr.step_count, "loss": loss, "lr": tr.scheduler.get_last_lr()[0], "epoch": tr.epoch,
              "frames_per_s": fps, "bad_steps": int(tr.bad_total.item())}
    tr.loss_sum.zero_()
    tr.loss_n = 0
    tr.log.write(record)
    tr.log.update(tr.step_count, tr.epoch, loss, fps)
    if bad_run >= tr.cfg.train.max_bad_steps:
        raise TrainingDiverged(
            f"{tr.run_dir}: {bad_run} consecutive steps had a non-finite loss or gradient; stopping "
            f"(last good checkpoint kept; try a lower train.lr or train.precision=fp32)"
        )


def validate(tr: Trainer) -> dict[str, float] | None:
    """Rank 0 validates (others wait); logs a table and a metrics line; keeps `best` by PSNR."""
    result, improved = None, False
    if tr.info.is_main:
        m = evaluate(tr.model, tr.val_videos, tr.cfg, tr.device, tr.precision)
        result = {"step": tr.step_count, **m}
        tr.log.write(result)
        tr.log.eval_table(tr.step_count, m)
        psnr = m.get("val_psnr")
        improved = psnr is not None and math.isfinite(psnr) and (tr.best_psnr is None or psnr > tr.best_psnr)
        if improved:
            tr.best_psnr = psnr
    if distributed.broadcast(tr.info, improved):  # every rank joins the gather inside save()
        tr.save("best")
    return result
