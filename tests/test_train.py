"""convlstm train: learning, exact resume, signals, broken files, config errors, checkpoints, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convlstm_cli import checkpoint
from convlstm_cli.cli import app
from convlstm_cli.config import load_config
from convlstm_cli.errors import CheckpointError, ConfigError

runner = CliRunner()

# A tiny model on 32×32 frames: fast enough for CI on 2 cores.
TINY = [
    "model.hidden_channels=8,16", "model.stem_channels=8", "model.horizon=2",
    "data.size=32", "data.context=4", "data.batch_size=4", "data.workers=1",
    "train.warmup_steps=2", "train.tensorboard=false", "train.eval_every=1000",
]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def train_cli(*args: str) -> object:
    return runner.invoke(app, ["train", *args], catch_exceptions=False)


def tiny_args(videos: Path, out: Path, *extra: str) -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    return [str(videos), "--out", str(out), *sets, *extra]


def test_run_directory_contract(videos, tmp_path):
    out = tmp_path / "run"
    r = train_cli(*tiny_args(videos, out, "--max-steps", "4", "--log-every", "2"))
    assert r.exit_code == 0, r.output
    assert (out / "config.yaml").is_file()
    last = out / "checkpoints" / "last.pt"
    assert last.is_file() and (out / "checkpoints" / "best.pt").is_file()
    lines = read_metrics(out)
    train_lines = [x for x in lines if "loss" in x]
    assert [x["step"] for x in train_lines] == [2, 4]
    evals = [x for x in lines if "val_psnr" in x]
    assert evals and {"baseline_psnr", "val_ssim", "val_mse", "val_mae"} <= set(evals[-1])
    # Plain tensors and values only: loads with weights_only=True and holds every stateful part.
    payload = torch.load(last, weights_only=True)
    for key in ("model", "optimizer", "scheduler", "rng", "streamers", "stream_states", "config", "step"):
        assert key in payload, key
    assert payload["step"] == 4
    assert payload["config"]["model"]["hidden_channels"] == [8, 16]


def test_existing_run_is_not_overwritten(videos, tmp_path):
    out = tmp_path / "run"
    assert train_cli(*tiny_args(videos, out, "--max-steps", "1")).exit_code == 0
    before = (out / "checkpoints" / "last.pt").read_bytes()
    r = runner.invoke(app, ["train", *tiny_args(videos, out, "--max-steps", "2")])
    assert r.exit_code == 2
    assert "already holds a run" in r.output and "--resume" in r.output
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_logs_the_same_losses(videos, tmp_path, monkeypatch):
    """A run stopped (by a real SIGINT) after step 5 and resumed logs the uninterrupted run's losses."""
    from convlstm_cli import train as train_mod

    common = ["--max-steps", "8", "--log-every", "1", "--set", "data.val_fraction=0",
              "--set", "train.save_every=1000"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert train_cli(*tiny_args(videos, full, *common)).exit_code == 0

    original = train_mod.Trainer.step

    def step_then_interrupt(self, batches):
        loss = original(self, batches)
        if self.step_count == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the handler lets the step finish, then saves
        return loss

    monkeypatch.setattr(train_mod.Trainer, "step", step_then_interrupt)
    r = runner.invoke(app, ["train", *tiny_args(videos, part, *common)])
    assert r.exit_code == 130, r.output
    monkeypatch.setattr(train_mod.Trainer, "step", original)
    assert torch.load(part / "checkpoints" / "last.pt", weights_only=True)["step"] == 5
    r = train_cli(str(videos), "--resume", str(part))
    assert r.exit_code == 0, r.output
    a = {x["step"]: x["loss"] for x in read_metrics(full) if "loss" in x}
    b = {x["step"]: x["loss"] for x in read_metrics(part) if "loss" in x}
    assert sorted(b) == list(range(1, 9))
    for step in range(1, 9):
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-9), step
    # Losses must actually change between steps, or this comparison would prove nothing.
    assert len({round(v, 9) for v in a.values()}) > 4


def test_training_beats_copy_last_baseline(videos, tmp_path):
    out = tmp_path / "learn"
    r = train_cli(*tiny_args(videos, out, "--max-steps", "300", "--set", "train.lr=0.01",
                             "--set", "data.val_fraction=0.2"))
    assert r.exit_code == 0, r.output
    evals = [x for x in read_metrics(out) if "val_mse" in x]
    final = evals[-1]
    # The untrained model starts as copy-last (skip_last_frame); learning motion must beat it clearly.
    assert final["val_mse"] < 0.85 * final["baseline_mse"], final
    assert final["val_psnr"] > final["baseline_psnr"] + 0.5, final


def test_broken_videos_are_skipped(videos, tmp_path):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(videos, mixed)
    (mixed / "notes.mp4").write_text("this is not a video")
    (mixed / "empty.avi").write_bytes(b"")
    r = train_cli(*tiny_args(mixed, tmp_path / "run", "--max-steps", "2"))
    assert r.exit_code == 0, r.output
    assert "notes.mp4" in r.output and "empty.avi" in r.output


def test_video_breaking_mid_run_is_reported(videos, tmp_path, monkeypatch):
    import shutil

    from convlstm_cli import train as train_mod

    data = tmp_path / "data"
    shutil.copytree(videos, data)
    original = train_mod.find_videos

    def probe_then_truncate(*args):
        train_v, val_v = original(*args)
        victim = Path(train_v[0].path)  # passed the probe whole; now cut it to a third
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
        return train_v, val_v

    monkeypatch.setattr(train_mod, "find_videos", probe_then_truncate)
    out = tmp_path / "run"
    r = train_cli(*tiny_args(data, out, "--max-steps", "30", "--set", "data.val_fraction=0"))
    assert r.exit_code == 0, r.output
    assert "video problem" in r.output
    problems = [x for x in read_metrics(out) if "video_problem" in x]
    assert problems and problems[0]["reason"]


def test_no_usable_video_is_one_clear_error(tmp_path):
    (tmp_path / "a.mp4").write_text("nope")
    r = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert "error:" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.lrr=0.1", "did you mean train.lr"),
        ("modle.horizon=3", "did you mean model"),
        ("train.max_steps=many", "train.max_steps: expected an integer"),
        ("data.size=30", "divisible"),
        ("train.blackout=1.5", "train.blackout: a share in [0, 1]"),
        ("train.state_reset=-0.1", "train.state_reset: a share in [0, 1]"),
        ("train.blackout_region=side", "train.blackout_region: one of frame, band"),
        ("train.blackout_fill=zero", "train.blackout_fill: one of freeze, noise, black"),
    ],
)
def test_config_errors_are_clear(videos, tmp_path, setting, message):
    r = runner.invoke(app, ["train", str(videos), "--out", str(tmp_path / "r"), "--set", setting])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  warmup_step: 3\n")
    with pytest.raises(ConfigError, match="unknown config key train.warmup_step .did you mean train.warmup_steps"):
        load_config(bad)
    cfg = load_config("quickstart", ["train.lr=1e-3"], **{"train.seed": 5})
    assert cfg.train.lr == 1e-3 and cfg.train.seed == 5
    with pytest.raises(ConfigError, match="train.compile_mode: one of default, reduce-overhead"):
        load_config(None, ["train.compile_mode=fast"])


def test_compile_auto_means_on_a_gpu_only(videos, tmp_path):
    from convlstm_cli.device import resolve_compile

    assert load_config(None).train.compile == "auto"
    assert resolve_compile("auto", torch.device("cuda")) is True
    assert resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile(True, torch.device("cpu")) is True and resolve_compile(False, torch.device("cuda")) is False
    assert load_config(None, ["train.compile=true"]).train.compile is True
    with pytest.raises(ConfigError, match="train.compile: auto, true or false, got 'sometimes'"):
        load_config(None, ["train.compile=sometimes"])
    tr = make_trainer(videos, tmp_path)  # the default config on the CPU runs eagerly (the dense loss wraps it)
    assert tr.compiled is False and getattr(tr.net, "model", tr.net) is tr.model


@pytest.mark.parametrize("native", [False, True])
def test_bf16_asked_without_native_bf16_runs_fp32_and_says_why(videos, tmp_path, monkeypatch, native):
    # Both outcomes on any CPU: the machine's answer is replaced, and asking bf16 on a CPU without
    # it must train in fp32 (emulated bf16 is slower, not faster) and say so in the run's header.
    import convlstm_cli.device as dev

    monkeypatch.setattr(dev, "bf16_supported", lambda device: native)
    out = tmp_path / "run"
    r = train_cli(*tiny_args(videos, out, "--max-steps", "1", "--set", "train.precision=bf16"))
    assert r.exit_code == 0, r.output
    header = " ".join(r.output.split())  # rich wraps long lines
    if native:
        assert "precision bf16," in header and "no native bf16" not in header
    else:
        assert f"precision fp32 (bf16 asked, but this CPU ({dev.cpu_isa()['summary']}) has no native bf16)" in header
    assert dev.fallback_note("auto", "fp32", torch.device("cpu")) is None  # only an explicit bf16 is news
    assert "does not support it" in dev.fallback_note("bf16", "fp32", torch.device("cuda"))


def test_reduce_overhead_means_cuda_graphs_only_on_cuda(videos, tmp_path):
    # On the CPU there are no CUDA graphs to replay: the mode falls back to a plain compile and the
    # step neither marks graph iterations nor copies the state.
    tr = make_trainer(videos, tmp_path, "train.compile=true", "train.compile_mode=reduce-overhead")
    assert tr.device.type == "cpu" and tr.graphs is False


def test_not_a_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint file"):
        checkpoint.load(text)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": checkpoint.FORMAT, "model": {}, "config": {}, "obj": Path("x")}, pickled)
    with pytest.raises(CheckpointError, match="pickled"):
        checkpoint.load(pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="marker"):
        checkpoint.load(foreign)


def test_atomic_save_keeps_previous_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.ones(2)}, "config": {}})
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save(path, {"model": {"w": torch.zeros(2)}, "config": {}})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_nonfinite_steps_are_skipped_and_counted(videos, tmp_path, monkeypatch):
    from convlstm_cli.distributed import DistInfo
    from convlstm_cli.runlog import RunLog
    from convlstm_cli.train import Trainer, find_videos

    cfg = load_config(None, TINY + ["train.max_bad_steps=3", "train.precision=fp32"])
    log = RunLog(tmp_path, enabled=False)
    train_v, val_v = find_videos(videos, cfg, log)
    tr = Trainer(cfg, train_v, val_v, tmp_path, DistInfo(), log)
    stream = iter(tr.streamer)
    tr.step([next(stream)])
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    opt_steps = [s["step"].clone() for s in tr.optimizer.state.values()]
    monkeypatch.setattr(tr, "loss_fn", lambda p, t: (p - t).pow(2).mean() * float("nan"))
    tr.step([next(stream)])
    after = tr.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the update was skipped
    assert [s["step"] for s in tr.optimizer.state.values()] == opt_steps
    assert int(tr.bad_total) == 1 and int(tr.bad_run) == 1
    from convlstm_cli.train import TrainingDiverged

    tr.step([next(stream)])
    tr.step([next(stream)])
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        tr.log_step(0.0)
    tr.streamer.close()


def test_sigint_saves_and_exits_130(videos, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "convlstm_cli", "train", *tiny_args(videos, out, "--max-steps", "100000",
                                                                      "--log-every", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    assert (out / "metrics.jsonl").exists(), "training never started"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "resume with" in output and "Traceback" not in output
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert payload["step"] >= 1
    r = train_cli(str(videos), "--resume", str(out), "--max-steps", str(payload["step"] + 2))
    assert r.exit_code == 0, r.output
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == payload["step"] + 2


def test_ddp_two_processes(videos, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "convlstm_cli", "train", *tiny_args(videos, out, "--max-steps", "3", "--device", "cpu")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert payload["world_size"] == 2 and len(payload["streamers"]) == 2 and len(payload["stream_states"]) == 2
    # Rank 0 alone logs: one line per logged step, not two.
    steps = [x["step"] for x in read_metrics(out) if "loss" in x]
    assert steps == sorted(set(steps))
    # Resuming with one process says what it does with the two ranks' streams, and continues.
    r = train_cli(str(videos), "--resume", str(out), "--max-steps", "4", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "written by 2 process(es), this run has 1" in " ".join(r.output.split())


def make_trainer(videos, tmp_path, *sets):
    from convlstm_cli.distributed import DistInfo
    from convlstm_cli.runlog import RunLog
    from convlstm_cli.train import Trainer, find_videos

    cfg = load_config(None, TINY + list(sets))
    log = RunLog(tmp_path, enabled=False)
    train_v, val_v = find_videos(videos, cfg, log)
    return Trainer(cfg, train_v, val_v, tmp_path, DistInfo(), log)


def record_states(tr):
    """Wrap the network so every call records the state it was given (cloned)."""
    seen = []
    net = tr.net

    def spy(x, state):
        seen.append(state.clone() if state.initialized else None)
        return net(x, state)

    tr.net = spy
    return seen


def record_live_states(tr):
    """Wrap the network so every call records whether its state is still attached to a graph."""
    seen = []
    net = tr.net

    def spy(x, state):
        seen.append(state.initialized and state[0][0].requires_grad)
        return net(x, state)

    tr.net = spy
    return seen


def zero_lanes(state) -> list[bool]:
    """Per lane: is every level's (h, c) exactly zero?"""
    return [all(bool((t[lane] == 0).all()) for hc in state for t in hc) for lane in range(state.batch_size)]


@pytest.mark.parametrize("mode", ["carried", "stateless", "state_reset"])
def test_state_is_carried_reset_per_lane_or_dropped(videos, tmp_path, mode):
    sets = {"carried": ["train.state_reset=0"], "stateless": ["train.stateless=true"],
            "state_reset": ["train.state_reset=0.5"]}
    tr = make_trainer(videos, tmp_path, *sets[mode], "data.batch_size=3")
    seen = record_states(tr)
    batches = []
    stream = iter(tr.streamer)
    for _ in range(14):  # 6 videos of ≤ 9 windows over 3 lanes: several video switches happen
        batches.append(next(stream))
        tr.step(batches[-1:])
    tr.streamer.close()
    switches, cold, carried = 0, 0, 0
    for k in range(1, len(batches)):
        zeros = zero_lanes(seen[k])
        if mode == "stateless":  # every chunk starts from zeros, whatever the lane did before
            assert all(zeros)
            continue
        for lane in range(3):
            zero, reset = zeros[lane], bool(batches[k].reset[lane])
            # A new video always starts from zeros; with state_reset, so does a share of the others.
            assert zero == reset or (mode == "state_reset" and zero), (k, lane)
            switches += reset
            cold += zero and not reset
            carried += not zero
    if mode != "stateless":
        assert switches >= 1 and carried >= 10, (switches, carried)
        assert cold >= 3 if mode == "state_reset" else cold == 0, cold


def test_cold_starts_inside_a_step_at_every_chunk(videos, tmp_path):
    """state_reset_at: chunk also zeroes lanes at a two-chunk step's second chunk (step: only at its
    first), and draws the first chunk's lanes as step does (the same key), so one-chunk steps train
    exactly as before."""
    masks = {}
    for at in ("step", "chunk"):
        tr = make_trainer(videos, tmp_path / at, "train.detach_every=2", "data.batch_size=3",
                          "train.state_reset=0.5", f"train.state_reset_at={at}")
        seen = record_states(tr)
        stream = iter(tr.streamer)
        firsts, cold_inside = [], 0
        for k in range(8):
            a, b = next(stream), next(stream)
            tr.step([a, b])
            if k == 0:
                continue  # the first chunk of a run has no state yet
            firsts.append(zero_lanes(seen[2 * k]))
            switched = b.reset.tolist()
            cold_inside += sum(z and not r for z, r in zip(zero_lanes(seen[2 * k + 1]), switched))
        tr.streamer.close()
        masks[at] = (firsts, cold_inside)
    assert masks["step"][1] == 0 and masks["chunk"][1] >= 2, masks
    assert masks["step"][0] == masks["chunk"][0] and any(any(f) for f in masks["step"][0])


def test_state_reset_of_every_lane_trains_as_stateless(videos, tmp_path):
    """train.state_reset=1 zeroes every lane's state at every step: the losses of --stateless, and
    not those of the carried state (which this comparison would otherwise not tell apart)."""
    common = ["--max-steps", "5", "--log-every", "1", "--set", "data.val_fraction=0"]
    runs = {"stateless": ["--stateless"], "reset": ["--set", "train.state_reset=1"],
            "carried": ["--set", "train.state_reset=0"]}
    losses = {}
    for name, extra in runs.items():
        assert train_cli(*tiny_args(videos, tmp_path / name, *common, *extra)).exit_code == 0
        losses[name] = [x["loss"] for x in read_metrics(tmp_path / name) if "loss" in x]
    assert losses["reset"] == pytest.approx(losses["stateless"], rel=1e-6, abs=1e-9)
    assert losses["carried"] != pytest.approx(losses["stateless"], rel=1e-4, abs=1e-7)


def test_detach_every_two_backpropagates_through_both_chunks(videos, tmp_path):
    tr = make_trainer(videos, tmp_path, "train.detach_every=2", "data.batch_size=2")
    seen = record_live_states(tr)
    stream = iter(tr.streamer)
    for _ in range(3):  # three optimizer steps, six chunks, no "backward a second time" error
        tr.step([next(stream), next(stream)])
    tr.streamer.close()
    # Within a step the second chunk gets the first chunk's live state; each step starts detached.
    assert seen == [False, True, False, True, False, True]
    assert tr.step_count == 3 and not tr.state[0][0].requires_grad


def test_detach_schedule_grows_the_truncation_window_at_its_steps(videos, tmp_path):
    from convlstm_cli.trainer import StopFlag

    tr = make_trainer(videos, tmp_path, "train.detach_schedule=2@2,3@3", "train.max_steps=4")
    seen = record_live_states(tr)
    try:
        tr._loop(StopFlag())
    finally:
        tr.streamer.close()
    # Steps 0 and 1 one chunk each, step 2 two, step 3 three; a live state only inside a step.
    assert seen == [False, False, False, True, False, True, True]
    assert tr.step_count == 4


@pytest.mark.parametrize("text", ["4@0", "x", "2@5,3@5", "0@4", "2@9,3@4", "2"])
def test_detach_schedule_rejects_what_is_not_a_curriculum(text):
    with pytest.raises(ConfigError, match="train.detach_schedule"):
        load_config(None, [f"train.detach_schedule={text}"])


def test_detach_every_at_follows_the_schedule():
    from convlstm_cli.config import TrainConfig, detach_every_at, detach_schedule

    schedule = detach_schedule(TrainConfig(detach_every=1, detach_schedule="2@600, 4@900"))
    assert schedule == [(0, 1), (600, 2), (900, 4)]
    assert [detach_every_at(schedule, s) for s in (0, 599, 600, 899, 900, 5000)] == [1, 1, 2, 2, 4, 4]


def test_default_yaml_lists_every_key_with_its_default():
    from convlstm_cli.config import RunConfig, flatten, to_dict

    listed, defaults = flatten(to_dict(load_config("default"))), flatten(to_dict(RunConfig()))
    assert set(listed) == set(defaults)
    assert {k: v for k, v in listed.items() if defaults[k] != v} == {}


@pytest.mark.parametrize("every", [1, 2])
def test_blackout_hides_inputs_and_never_targets(videos, tmp_path, every):
    tr = make_trainer(videos, tmp_path, "train.blackout=1.0", f"train.detach_every={every}", "data.batch_size=3")
    fed, scored, resets = [], [], []
    net, loss_fn, hide = tr.net, tr.loss_fn, tr._blackout

    def spy(x, state):
        fed.append(x.detach().clone())
        return net(x, state)

    tr.net = spy
    tr.loss_fn = lambda pred, target: (scored.append(target.clone()), loss_fn(pred, target))[1]
    tr._blackout = lambda chunks: (resets.append([r for _, _, r in chunks]), hide(chunks))[1]
    stream = iter(tr.streamer)
    for _ in range(12):  # 6 videos of ≤ 9 chunks over 3 lanes: some lanes switch video inside a step
        tr.step([next(stream) for _ in range(every)])
    tr.streamer.close()
    t, crossed, exempt = fed[0].shape[1], 0, 0
    for k in range(0, len(fed), every):
        # Per lane, over the step's chunks in a row: was input frame j+1 the frame it should be?
        seen = torch.cat([(x[:, 1:] == y[:, : t - 1]).flatten(2).all(-1) for x, y in
                          zip(fed[k : k + every], scored[k : k + every])], dim=1)
        switch = torch.stack(resets[k // every][1:]).any(0) if every > 1 else torch.zeros(3, dtype=torch.bool)
        if every > 1:  # a later chunk's first frame is the chunk before's first forecast target (same video)
            first = (fed[k + 1][:, 0] == scored[k][:, t - 1]).flatten(1).all(-1) | switch
            seen = torch.cat([seen[:, : t - 1], first[:, None], seen[:, t - 1 :]], dim=1)
        # Every lane shows its first two frames, then hides the rest of the step's window from one
        # frame on, unless it switches video within the window; the targets are the true frames.
        assert seen[:, 0].all() and (seen.int().diff(dim=1) <= 0).all()
        assert (seen[:, -1] == switch).all()
        crossed += int((~seen[~switch, t - 2]).sum())  # hidden from a frame of the first chunk on
        exempt += int(switch.sum())
    assert every == 1 or (crossed and exempt)  # spans crossed a chunk's end; switching lanes stayed shown
