"""train.channels_last: auto — the faster layout is timed on a CPU in fp32, known elsewhere, and kept."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import TINY, make_trainer, read_metrics, tiny_args, train_cli

from convlstm_cli import layout
from convlstm_cli.config import load_config
from convlstm_cli.errors import ConfigError
from convlstm_cli.model.forecaster import EncoderForecaster, EveryStep


def tiny_model():
    torch.manual_seed(0)
    model = EncoderForecaster(in_channels=1, hidden_channels=(4, 8), stem_channels=4, horizon=2)
    return model, EveryStep(model)


def is_channels_last(model) -> bool:
    w = max((p for p in model.parameters() if p.dim() == 4), key=torch.Tensor.numel)  # not a 1-channel one
    return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def test_known_layouts_need_no_timing():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert layout.known(False, cuda, "bf16") == layout.LayoutChoice(False, "asked")
    assert layout.known(True, cpu, "fp32") == layout.LayoutChoice(True, "asked")
    assert layout.known("auto", cuda, "fp32").channels_last is True
    assert layout.known("auto", cpu, "bf16").channels_last is True
    assert layout.known("auto", cpu, "fp32") is None  # the one case that is timed


@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.parametrize("setup_s", [4.0, 10.0])
def test_auto_keeps_the_faster_layout_and_leaves_the_model_in_nchw(monkeypatch, slow, setup_s):
    # Step times replaced by ones that depend on the layout the model is really in when timed:
    # the layout `slow` costs 3 s, the other 1 s, and each layout's first (set-up) step `setup_s`,
    # which must not be counted; set-up steps over LONG_STEP_S mean one timed step each, not two.
    model, net = tiny_model()
    seen = []

    def fake_seconds(m, n, frames, amp):
        cl = is_channels_last(m)
        seen.append(cl)
        return setup_s if seen.count(cl) == 1 else (3.0 if cl is slow else 1.0)

    monkeypatch.setattr(layout, "step_seconds", fake_seconds)
    choice = layout.choose("auto", model, net, (2, 3, 1, 16, 16), torch.device("cpu"), "fp32",
                           lambda: torch.autocast("cpu", enabled=False))
    assert choice.channels_last is (not slow)
    rounds = 1 if setup_s > layout.LONG_STEP_S else 2
    assert seen == [False, True] * (1 + rounds)  # alternated: a set-up step, then the timed ones
    cl_ms, nchw_ms = (3000, 1000) if slow else (1000, 3000)
    assert f"a chunk {cl_ms:,} ms in channels_last, {nchw_ms:,} in NCHW" in choice.why
    assert not is_channels_last(model)  # the caller converts it to the chosen layout


def test_timing_really_runs_the_model_and_leaves_no_gradient():
    model, net = tiny_model()
    frames = torch.rand(2, 3, 1, 16, 16)
    best = layout.time_layouts(model, net, frames, lambda: torch.autocast("cpu", enabled=False), repeats=1)
    assert set(best) == {False, True} and all(0 < s < 60 for s in best.values())
    assert all(p.grad is None for p in model.parameters())


def test_a_run_records_the_chosen_layout_and_a_resume_keeps_it(videos, tmp_path, monkeypatch):
    out = tmp_path / "run"
    r = train_cli(*tiny_args(videos, out, "--max-steps", "2", "--set", "train.channels_last=auto"))
    assert r.exit_code == 0, r.output
    chosen = load_config(out / "config.yaml", []).train.channels_last
    assert isinstance(chosen, bool)
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["config"]["train"]["channels_last"] is chosen
    assert "(auto, timed:" in " ".join(r.output.split())

    def no_timing(*args, **kwargs):
        raise AssertionError("a resumed run timed the layouts again")

    monkeypatch.setattr(layout, "time_layouts", no_timing)
    r = train_cli(str(videos), "--resume", str(out), "--max-steps", "3")
    assert r.exit_code == 0, r.output


def test_a_timed_run_trains_as_a_run_told_its_layout(videos, tmp_path):
    # Same initial weights, data order and cold starts, and the timing leaves the weights and the
    # run's random stream (saved in checkpoints) as they were. The two layouts' gradients agree to
    # ~1e-8, so the losses agree closely.
    auto = tmp_path / "auto"
    common = ["--max-steps", "4", "--log-every", "1", "--set", "data.val_fraction=0"]
    assert train_cli(*tiny_args(videos, auto, *common, "--set", "train.channels_last=auto")).exit_code == 0
    chosen = load_config(auto / "config.yaml", []).train.channels_last
    told = tmp_path / "told"
    assert train_cli(*tiny_args(videos, told, *common, "--set", f"train.channels_last={chosen}")).exit_code == 0
    a = [x["loss"] for x in read_metrics(auto) if "loss" in x]
    b = [x["loss"] for x in read_metrics(told) if "loss" in x]
    assert len(a) == 4 and a == pytest.approx(b, rel=1e-5)
    assert len(set(a)) > 2  # the losses move, or equality would prove nothing
    rng = [torch.load(run / "checkpoints" / "last.pt", weights_only=True)["rng"]["torch"] for run in (auto, told)]
    assert torch.equal(*rng)


def test_the_trainer_puts_the_model_in_the_chosen_layout(videos, tmp_path):
    for asked in (False, True):
        tr = make_trainer(videos, tmp_path / str(asked), f"train.channels_last={asked}")
        assert tr.layout.channels_last is asked and is_channels_last(tr.model) is asked
    tr = make_trainer(videos, tmp_path / "auto", "train.channels_last=auto")
    assert is_channels_last(tr.model) is tr.layout.channels_last is tr.cfg.train.channels_last


def test_a_bad_channels_last_value_is_a_config_error():
    with pytest.raises(ConfigError, match="train.channels_last: auto, true or false"):
        load_config(None, TINY + ["train.channels_last=fast"])
    assert json.dumps(load_config(None, TINY).train.channels_last) == '"auto"'
