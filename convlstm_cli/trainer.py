"""The Trainer: the one owner of a training run's state, and the loop that advances it.

Everything that must survive a restart is a part of the Trainer with a `state_dict`: the model, the
optimizer, the learning-rate schedule, the streamer of every rank, the carried stream state of every
rank, the RNG and the counters. `Trainer.state_dict()` is their union and is exactly what a
checkpoint holds; `load_state_dict` restores it (torchtitan's CheckpointManager pattern). The loop
is `run`: `step` (convlstm_cli.step), `validate` (convlstm_cli.evaluate), `save`, `log_step`.

No host synchronisation happens per step: losses accumulate on the device and are read at log
intervals; a non-finite loss or gradient skips the update on the device and is counted there.
"""

from __future__ import annotations

import json
import math
import random
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from convlstm_cli import checkpoint, distributed, layout
from convlstm_cli.blackout import blackout, key_seed
from convlstm_cli.config import RunConfig, detach_every_at, detach_schedule, to_dict
from convlstm_cli.curves import plot_curves
from convlstm_cli.data.view import Augment
from convlstm_cli.device import autocast, resolve_compile, resolve_device, resolve_precision, to_unit
from convlstm_cli.ema import EMA
from convlstm_cli.errors import InputError
from convlstm_cli.evaluate import evaluate
from convlstm_cli.layout import LayoutChoice
from convlstm_cli.losses import make_loss
from convlstm_cli.model.forecaster import EncoderForecaster, EveryStep
from convlstm_cli.model.state import StreamState
from convlstm_cli.runlog import RunLog, Throughput
from convlstm_cli.step import make_optimizer, train_step


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
    """All stateful parts of a run; `state_dict()` of this object is the checkpoint.

    Args:
        cfg: the resolved run config.
        train_videos, val_videos: probed videos to train on and to validate on (may be empty).
        run_dir: where checkpoints and logs go.
        info: this process's place in a distributed run.
        log: where lines, metrics and tables go (rank 0 only).
    """

    def __init__(self, cfg: RunConfig, train_videos: list, val_videos: list, run_dir: Path,
                 info: distributed.DistInfo, log: RunLog) -> None:
        self.cfg, self.val_videos, self.run_dir, self.info, self.log = cfg, val_videos, run_dir, info, log
        t = cfg.train
        self.device = resolve_device(t.device)
        if self.device.type == "cuda" and info.enabled:
            self.device = torch.device("cuda", info.local_rank)
        self.precision = resolve_precision(t.precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick kernels once
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        self._build_model()
        self.optimizer, self.fused = make_optimizer(self.model.parameters(), self.device, t.lr, t.weight_decay)
        self.ema = EMA(self.model, t.ema) if t.ema > 0 else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.streamer = self._build_streamer(train_videos)
        self.state = StreamState()
        self.step_count, self.epoch = 0, 0
        self.best_psnr: float | None = None
        self.best = {"step": None, "delta": None, "frames": 0}  # the best validation so far
        self.stale = 0  # validations since the best one (train.patience)
        self.bad_total = torch.zeros((), device=self.device)  # counted on the device: no sync per step
        self.bad_run = torch.zeros((), device=self.device)
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_n = 0
        self.problems_reported = 0
        self.speed = Throughput()

    def _build_model(self) -> None:
        t = self.cfg.train
        self.model = EncoderForecaster.from_config(self.cfg.model).to(self.device)
        self.net: torch.nn.Module = EveryStep(self.model) if t.dense_loss else self.model
        self.layout = self._choose_layout()
        if self.layout.channels_last:
            self.model.to(memory_format=torch.channels_last)
        t.channels_last = self.layout.channels_last  # resolved: config.yaml and checkpoints keep it
        self.loss_fn = make_loss(t.loss, t.hard_pixels, t.hard_weight)
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        # CUDA graphs ("reduce-overhead") replay a whole forward and backward as one launch. That pays
        # where a step is launch-bound (many small per-time-step kernels: small models and batches);
        # the gpu sample config at 16 lanes on an H100 trained at the same speed either way.
        self.compiled = resolve_compile(t.compile, self.device)
        self.graphs = self.compiled and t.compile_mode == "reduce-overhead" and self.device.type == "cuda"
        if self.compiled:
            mode = t.compile_mode if t.compile_mode != "reduce-overhead" or self.graphs else "default"
            self.net = torch.compile(self.net, mode=mode)

    def _choose_layout(self) -> LayoutChoice:
        """train.channels_last, resolved (`convlstm_cli.layout`); rank 0's choice on every rank."""
        d = self.cfg.data
        shape = (d.batch_size, d.context, d.channels, *d.hw())
        choice = layout.choose(self.cfg.train.channels_last, self.model, self.net, shape, self.device,
                               self.precision, lambda: autocast(self.device, self.precision))
        return distributed.broadcast(self.info, choice)

    def _build_streamer(self, videos: list):
        from convlstm_cli.data.cache import plan_cache
        from convlstm_cli.data.streamer import ClipStreamer

        d, info = self.cfg.data, self.info
        cache_dir = d.cache_dir or str(self.run_dir / "cache")
        use_cache, why = plan_cache(d.cache, videos, d.hw(), d.channels, d.stride, d.resize, cache_dir, d.cache_budget_gb)
        self.log.print(why)
        return ClipStreamer(
            videos, batch_size=d.batch_size, context=d.context, horizon=self.cfg.model.horizon,
            size=d.hw(), channels=d.channels, stride=d.stride, seed=self.cfg.train.seed, shuffle=True,
            loop=True, rank=info.rank, world_size=info.world_size, workers=d.workers, prefetch=d.prefetch,
            cache_dir=cache_dir if use_cache else None,
            pin_memory=self.device.type == "cuda", resize=d.resize, random_crop=True,
            augment=Augment(**asdict(d.augment)),
        )

    # -- one optimizer step ------------------------------------------------------------------------
    def _start_chunk(self, inputs: Tensor, reset: Tensor, state: StreamState) -> StreamState:
        state = StreamState() if self.cfg.train.stateless else state.reset(reset)
        # Zeros made here, outside a compiled net: it then sees one kind of state and compiles once.
        state = self.model.initial_state(inputs, state)
        if self.graphs:  # a replay overwrites the graphs' outputs: feed the carried state in as a copy
            state = state.clone()
        return state

    def step(self, batches: list) -> Tensor:
        """One optimizer step over consecutive chunks (`train.detach_every` of them, or as
        `train.detach_schedule` says at this step: the TBPTT window).

        Each chunk starts from the carried state (lanes reset where the streamer says so); see
        `convlstm_cli.step.train_step`. An update whose loss or gradient is not finite is skipped.
        """
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()  # one training iteration of CUDA-graph replays
        chunks = []
        for batch in batches:
            batch = batch.to(self.device)  # asynchronous copies from pinned memory
            inputs, targets = to_unit(batch.inputs, self.device), to_unit(batch.targets, self.device)
            if self.cfg.train.dense_loss:  # frames 1 … T−1 one step ahead, then the forecast
                targets = torch.cat([inputs[:, 1:], targets], dim=1)
            chunks.append((inputs, targets, batch.reset))
        chunks = self._blackout(self._cold_starts(chunks))
        loss, bad, self.state = train_step(
            self.net, self.optimizer, chunks, self.state, params=list(self.model.parameters()), fused=self.fused,
            amp=lambda: autocast(self.device, self.precision), loss_fn=self.loss_fn,
            grad_clip=self.cfg.train.grad_clip, start=self._start_chunk,
        )
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.bad_total += bad
        self.bad_run = (self.bad_run + 1) * bad
        self.loss_sum += torch.where(bad, torch.zeros_like(loss), loss)
        self.loss_n += 1
        self.step_count += 1
        return loss

    def _cold_starts(self, chunks: list) -> list:
        """`train.state_reset`: zero the carried state of a random share of lanes at this step's start
        (`train.state_reset_at: step`) or at the start of each of its chunks (`chunk`).

        Why: a streamed video starts from zero state, and so does every window of a stateless model;
        a stateful recipe otherwise meets a zero state once per video (1 chunk in 15 of a 120-frame
        video), and measured 0.6 dB below the stateless model on a held-out video's first 8 frames
        (README, Memory). At a step's start the state is detached anyway; inside a step (`chunk`,
        with `detach_every` > 1) a cold lane's gradient stops there, as at a new video, so a lane
        meets a zero state as often per chunk as with one-chunk steps (on the reveal scene that was
        no better: README, Memory). The draw depends only on (seed, rank, step, chunk), so a resumed
        run draws the same lanes.
        """
        t = self.cfg.train
        if t.state_reset <= 0 or t.stateless:
            return chunks
        out = list(chunks)
        for k in range(len(chunks) if t.state_reset_at == "chunk" else 1):
            # (…, 1) for the first chunk: the key one-chunk steps always had (README rows reproduce)
            key = (t.seed, self.info.rank, self.step_count, 1) + ((k,) if k else ())
            g = torch.Generator().manual_seed(key_seed(key))
            inputs, targets, reset = out[k]
            # Non-blocking, as StreamState.reset moves its mask: a blocking copy to a GPU would wait
            # for the device every step.
            drawn = (torch.rand(inputs.shape[0], generator=g) < t.state_reset).to(reset.device, non_blocking=True)
            out[k] = (inputs, targets, reset | drawn)
        return out

    def _blackout(self, chunks: list) -> list:
        """Observation dropout (`train.blackout`) over the step's chunks in a row, inputs only (the
        targets were taken before). A lane that switches video within them is left in view."""
        t = self.cfg.train
        if t.blackout <= 0:
            return chunks
        inputs = torch.cat([x for x, _, _ in chunks], dim=1)
        resets = [r for _, _, r in chunks[1:] if r is not None]
        switch = torch.stack(resets).any(0) if resets else None
        # (…, 0): the key a one-chunk step had when each chunk was drawn alone (README rows reproduce)
        hidden = blackout(inputs, t.blackout, t.blackout_region, (t.seed, self.info.rank, self.step_count, 0),
                          t.blackout_fill, exempt=switch)
        per_chunk = hidden.split([x.shape[1] for x, _, _ in chunks], dim=1)
        return [(x, y, r) for x, (_, y, r) in zip(per_chunk, chunks)]

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every part of the run, for every rank (a collective in a distributed run: all ranks call it).

        Model, optimizer, schedule and RNG are rank 0's (DDP keeps the first three identical); the
        streamers and stream states are a list with one entry per rank.
        """
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step_count,
            "epoch": self.epoch,
            "best_psnr": self.best_psnr,
            "best": dict(self.best),
            "stale_evals": self.stale,
            "bad_steps": int(self.bad_total.item()),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "world_size": self.info.world_size,
            "streamers": distributed.gather(self.info, self.streamer.state_dict()),
            "stream_states": distributed.gather(self.info, self.state.state_dict()),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> str:
        """Restore what `state_dict()` returned; returns a note on how the streams were restored."""
        self.model.load_state_dict(sd["model"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.scheduler.load_state_dict(sd["scheduler"])
        if self.ema is not None and "ema" in sd:
            self.ema.load_state_dict(sd["ema"])
        elif self.ema is not None:  # a run that did not average yet starts its average at these weights
            self.ema.model.load_state_dict(sd["model"])
        self.step_count, self.epoch = int(sd["step"]), int(sd["epoch"])
        self.best_psnr = sd.get("best_psnr")
        self.best = dict(sd.get("best") or {"step": None, "delta": None, "frames": 0})
        self.stale = int(sd.get("stale_evals", 0))
        self.bad_total.fill_(float(sd.get("bad_steps", 0)))
        set_rng_state(sd["rng"])
        streams, states = sd.get("streamers"), sd.get("stream_states")
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
        """Write checkpoints/<name>.pt from `state_dict()` (every rank calls; rank 0 writes)."""
        payload = self.state_dict()
        if not self.info.is_main:
            return None
        for p in self.model.parameters():
            if not torch.isfinite(p).all():
                raise TrainingDiverged(
                    f"{self.run_dir}: weights became non-finite at step {self.step_count}; "
                    "not writing a checkpoint (the previous one is kept)"
                )
        ckdir = self.run_dir / "checkpoints"
        path = checkpoint.save(ckdir / f"{name}.pt", payload)
        if name == "last" and self.cfg.train.keep_last > 0:
            checkpoint.copy(path, ckdir / f"step-{self.step_count:08d}.pt")
            steps = sorted(ckdir.glob("step-*.pt"))
            for old in steps[: -self.cfg.train.keep_last]:
                old.unlink(missing_ok=True)
        return path

    def close(self) -> None:
        """Stop the decoding threads and drop the DDP wrapper (it holds the process group)."""
        self.streamer.close()
        self.net = self.model

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, video_dir: Path) -> RunResult:
        """Step until max_steps / epochs / a stop signal; validate and save on schedule and at the end."""
        t = self.cfg.train
        last_eval, interrupted = None, False
        try:
            with StopFlag() as stop:
                if self.val_videos and self.step_count == 0:  # the untrained model is copy-last: best.pt starts there
                    self.validate()
                self.log.start(t.max_steps, self.step_count)
                last_eval, interrupted = self._loop(stop)
        finally:
            self.streamer.close()
            self.log.end_progress()
        if self.loss_n:
            self.log_step(self.speed.rate())
        if not interrupted and self.val_videos and (last_eval is None or last_eval.get("step") != self.step_count):
            last_eval = self.validate()
        self.save("last")
        if interrupted:
            self.log.print(f"interrupted at step {self.step_count}: saved {self.run_dir / 'checkpoints' / 'last.pt'}\n"
                           f"resume with: convlstm train {video_dir} --resume {self.run_dir}")
        else:
            self.log.print(f"done: {self.step_count} steps; checkpoints in {self.run_dir / 'checkpoints'}")
        if self.val_videos and self.best["step"] is not None:
            self.log.print(self.verdict())
        return RunResult(self.run_dir, self.step_count, interrupted, last_eval, self.best_psnr)

    def verdict(self) -> str:
        """One line on what best.pt is worth against copy-last on the held-out frames."""
        b = self.best
        if b["delta"] is not None and b["delta"] > 0:
            return (f"best: step {b['step']}, {b['delta']:+.2f} dB over copy-last on {b['frames']} held-out "
                    f"frames ({self.run_dir / 'checkpoints' / 'best.pt'})")
        if b["step"] == 0:
            return (f"never beat copy-last on {b['frames']} held-out frames: best.pt is the copy-last start "
                    "(step 0); try more or longer videos, data.augment, a lower train.lr or a smaller model")
        return (f"best: step {b['step']}, {b['delta']:+.2f} dB against copy-last on {b['frames']} held-out frames "
                "(this run did not validate at step 0; predict with care)")

    def _loop(self, stop: StopFlag) -> tuple[dict | None, bool]:
        """The steps of `run`; (the last validation, whether a stop signal ended it)."""
        t, info, d = self.cfg.train, self.info, self.cfg.data
        schedule = detach_schedule(t)  # a curriculum of truncation lengths, or detach_every throughout
        self.speed, last_eval = Throughput(), None
        stream = iter(self.streamer)
        while self.step_count < t.max_steps:
            batches = [next(stream) for _ in range(detach_every_at(schedule, self.step_count))]
            self.epoch = batches[-1].epoch
            if t.epochs is not None and batches[0].epoch >= t.epochs:
                break
            self.step(batches)
            self.speed.add(d.batch_size * d.context * len(batches) * info.world_size)
            self.report_problems()
            s = self.step_count
            if s % t.log_every == 0 or s == t.max_steps:
                self.log_step(self.speed.rate())
            if self.val_videos and s % t.eval_every == 0 and s < t.max_steps:
                last_eval = self.validate()
                if t.patience and self.stale >= t.patience:
                    self.log.print(f"stopping early at step {s}: no better validation in the last {t.patience} "
                                   f"(train.patience); best.pt is from step {self.best['step']}")
                    return last_eval, False
            if s % t.save_every == 0:
                self.save("last")
            # Ranks must agree on the step they stop at; in DDP that costs a collective, so it
            # is asked every few steps rather than every step (a signal then finishes ≤ 10 steps).
            if (not info.enabled or s % min(t.log_every, 10) == 0) and distributed.any_true(
                info, stop.requested, self.device
            ):
                return last_eval, True
        return last_eval, False

    def report_problems(self) -> None:
        """Name each video that broke while streaming (its lane kept the frames read before the break)."""
        problems = self.streamer.problems
        for p in problems[self.problems_reported:]:
            self.log.print(f"[yellow]video problem[/] {p.path}: {p.reason}")
            self.log.write({"step": self.step_count, "video_problem": p.path, "reason": p.reason})
        self.problems_reported = len(problems)

    def log_step(self, fps: float) -> None:
        """Read the device-side sums (the only host sync of the loop) and write one metrics line."""
        if self.loss_n == 0:
            return
        loss = float(self.loss_sum.item()) / self.loss_n
        bad_run = int(self.bad_run.item())
        record = {"step": self.step_count, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                  "epoch": self.epoch, "frames_per_s": fps, "bad_steps": int(self.bad_total.item())}
        self.loss_sum.zero_()
        self.loss_n = 0
        self.log.write(record)
        self.log.update(self.step_count, self.epoch, loss, fps)
        if bad_run >= self.cfg.train.max_bad_steps:
            raise TrainingDiverged(
                f"{self.run_dir}: {bad_run} consecutive steps had a non-finite loss or gradient; stopping "
                f"(last good checkpoint kept; try a lower train.lr or train.precision=fp32)"
            )

    def validate(self) -> dict[str, float] | None:
        """Rank 0 validates (others wait); logs a table, a metrics line and curves.png; keeps `best` by PSNR.

        best.pt is the checkpoint with the best validation PSNR. Validation at step 0 scores the
        untrained model, which is exactly copy-last, so best.pt is never worse than copy-last there.
        """
        result, improved = None, False
        if self.info.is_main:
            model = self.ema.model if self.ema is not None else self.model  # what predict will use
            m = evaluate(model, self.val_videos, self.cfg, self.device, self.precision)
            delta = m["val_psnr"] - m["baseline_psnr"] if m.get("val_frames") else math.nan
            result = {"step": self.step_count, **m, "delta_psnr": delta}
            self.log.write(result)
            self.log.eval_table(self.step_count, m)
            psnr = m.get("val_psnr")
            improved = psnr is not None and math.isfinite(psnr) and (self.best_psnr is None or psnr > self.best_psnr)
            if improved:
                self.best_psnr = psnr
                self.best = {"step": self.step_count, "delta": delta, "frames": m["val_frames"]}
            self.stale = 0 if improved else self.stale + 1
            self.curves()
        improved, self.stale = distributed.broadcast(self.info, (improved, self.stale))
        if improved:  # every rank joins the gather inside save()
            self.save("best")
        return result

    def curves(self) -> None:
        """Redraw curves.png from metrics.jsonl (a failure to draw never stops the run)."""
        try:
            records = [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines()]
            plot_curves(records, self.run_dir / "curves.png")
        except (OSError, ValueError) as e:
            self.log.print(f"[yellow]curves.png not drawn[/]: {e}")
