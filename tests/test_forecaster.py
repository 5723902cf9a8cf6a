"""EncoderForecaster: chunked streaming equals one pass, naive reference, autocast, memory format,
resolution independence, shape errors; package import and `python -m convlstm_cli` smoke tests."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from convlstm_cli import device as dev
from convlstm_cli.model.forecaster import EncoderForecaster, EveryStep, ModelConfig
from convlstm_cli.model.reference import ReferenceConvLSTM, to_reference
from convlstm_cli.model.state import StreamState

EXACT = {"atol": 1e-9, "rtol": 0.0}


def tiny_model(**kw) -> EncoderForecaster:
    torch.manual_seed(0)
    args = {"in_channels": 1, "hidden_channels": (4, 6), "kernel_size": 3, "horizon": 3,
            "stem_channels": 4, "stem_stride": 2}
    model = EncoderForecaster(**(args | kw))
    with torch.no_grad():  # a head that matters: the default init is near zero (copy-last-frame)
        model.head.weight.normal_(std=0.3)
    return model


def frames(b=2, t=6, c=1, size=16, seed=1, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, c, size, size, generator=g, dtype=dtype)


def assert_states_close(a: StreamState, b: StreamState, **tol) -> None:
    assert len(a) == len(b)
    for (h1, c1), (h2, c2) in zip(a, b, strict=True):
        torch.testing.assert_close(h1, h2, **tol)
        torch.testing.assert_close(c1, c2, **tol)


def double_reference(model):
    """to_reference(model) in float64 with model's exact weights (to_reference itself rounds to fp32)."""
    ref = to_reference(model).double()
    ref.load_state_dict(model.state_dict())
    return ref


# -- streaming -------------------------------------------------------------------------------------
def test_chunked_with_carried_state_equals_one_pass():
    model = tiny_model().double()
    x = frames(t=7)
    with torch.no_grad():
        want, want_state = model(x)
        state = None
        for chunk in x.split([3, 1, 3], dim=1):
            pred, state = model(chunk, state)
        again = model.forecast(state, x[:, -1], model.cfg.horizon)
    assert pred.shape == (2, 3, 1, 16, 16) and pred.dtype == torch.float64
    assert_states_close(state, want_state, **EXACT)
    torch.testing.assert_close(pred, want, **EXACT)
    torch.testing.assert_close(again, want, **EXACT)


def test_forecast_does_not_change_the_encoder_state():
    model = tiny_model().double()
    with torch.no_grad():
        _, state = model(frames(t=3))
        before = state.clone()
        model.forecast(state, frames(t=1)[:, 0], 4)
    assert_states_close(state, before, atol=0, rtol=0)


def test_predict_each_step_equals_forward_on_every_prefix():
    # Independent computation: for each t, forecasting from frames[:, :t+1] with forward().
    model = tiny_model(skip_last_frame=True).double()
    x = frames(t=4)
    with torch.no_grad():
        pred, final = model.predict_each_step(x, horizon=2)
        assert pred.shape == (2, 4, 2, 1, 16, 16)
        for t in range(4):
            want, state = model(x[:, : t + 1], horizon=2)
            torch.testing.assert_close(pred[:, t], want, **EXACT)
    assert_states_close(final, state, **EXACT)


def test_predict_each_step_chunked_equals_one_pass():
    model = tiny_model().double()
    x = frames(t=6)
    with torch.no_grad():
        want, want_state = model.predict_each_step(x, horizon=2)
        first, state = model.predict_each_step(x[:, :2], horizon=2)
        second, state = model.predict_each_step(x[:, 2:], state, horizon=2)
    torch.testing.assert_close(torch.cat([first, second], 1), want, **EXACT)
    assert_states_close(state, want_state, **EXACT)


def test_an_empty_streamstate_starts_from_zero():
    model = tiny_model().double()
    x = frames(t=3)
    with torch.no_grad():
        a, sa = model(x, StreamState())
        zeros = StreamState([(torch.zeros(s, dtype=torch.float64),) * 2 for s in model.state_shapes(2, 16, 16)])
        b, sb = model(x, zeros)
    torch.testing.assert_close(a, b, **EXACT)
    assert_states_close(sa, sb, **EXACT)


# -- reference, precision, memory format -------------------------------------------------------------
@pytest.mark.parametrize("peephole", [False, True])
def test_whole_model_equals_naive_reference(peephole):
    model = tiny_model(peephole=peephole, kernel_size=(3, 5)).double()
    if peephole:
        with torch.no_grad():
            for layer in [*model.encoder, *model.forecaster]:
                layer.peephole.normal_()
    ref = double_reference(model)
    assert sum(type(m) is ReferenceConvLSTM for m in ref.modules()) == 4
    x = frames(t=4)
    with torch.no_grad():
        _, s0 = model(x[:, :2])
        pred, state = model(x[:, 2:], s0)
        rpred, rstate = ref(x[:, 2:], s0)
        each, _ = model.predict_each_step(x, horizon=2)
        reach, _ = ref.predict_each_step(x, horizon=2)
    torch.testing.assert_close(pred, rpred, **EXACT)
    assert_states_close(state, rstate, **EXACT)
    torch.testing.assert_close(each, reach, **EXACT)


def test_autocast_bf16_returns_float32_on_any_cpu():
    model = tiny_model()
    x = frames(t=3, dtype=torch.float32)
    with dev.autocast(torch.device("cpu"), "bf16"):
        pred, state = model(x)
        pred2, state2 = model(x, state)
    for t in (pred, pred2, *[t for hc in (*state, *state2) for t in hc]):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    assert ((pred >= 0) & (pred <= 1)).all()


@pytest.mark.skipif(not dev.bf16_supported("cpu"), reason="this CPU has no native bf16")
def test_autocast_bf16_stays_close_to_fp32():
    model = tiny_model()
    x = frames(t=6, dtype=torch.float32)
    with torch.no_grad():
        want, want_state = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred, state = model(x)
    assert state[1][1].dtype == torch.float32
    err = (pred - want).abs().max().item()
    assert err < 3e-2, err
    assert_states_close(state, want_state, atol=5e-2, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_zero_state_has_the_layout_of_a_returned_state(channels_last):
    # torch.compile guards on strides and aliasing: a zero state laid out unlike the state the model
    # returns (or with h and c one tensor) would compile the training step twice.
    model = tiny_model()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = frames(t=2, dtype=torch.float32)
    zero = model.initial_state(x, None)
    with torch.no_grad():
        _, state = model(x, zero)
    for (h0, c0), (h1, c1) in zip(zero, state):
        assert h0 is not c0 and h0.data_ptr() != c0.data_ptr()
        assert (h0.stride(), c0.stride()) == (h1.stride(), c1.stride())
        assert not h0.any() and not c0.any()


def test_channels_last_equals_contiguous():
    model = tiny_model()
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert cl.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = frames(t=3, dtype=torch.float32)
    with torch.no_grad():
        want, want_state = model(x)
        pred, state = cl(x)
        each, _ = cl.predict_each_step(x, horizon=2)
        want_each, _ = model.predict_each_step(x, horizon=2)
    torch.testing.assert_close(pred, want, atol=1e-5, rtol=1e-5)
    assert_states_close(state, want_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(each, want_each, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("every_step", [False, True])
def test_channels_last_backward_gets_channels_last_gradients(every_step):
    """Every convolution's backward receives its gradient channels-last, so none pays a reordering
    copy (the batch-major layout once made autograd reorder each input-gate gradient twice)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Layouts(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[bool] = []  # this run's only (a class-level list would carry the last run's)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution_backward.default and args[0].shape[1] > 1:
                self.seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
            return func(*args, **(kwargs or {}))

    model = tiny_model().to(memory_format=torch.channels_last)
    pred, _ = model(frames(t=4, dtype=torch.float32), every_step=every_step)
    with Layouts() as mode:
        pred.square().sum().backward()
    assert len(mode.seen) > 10 and all(mode.seen)


def test_flow_output_is_copy_last_untrained_and_moves_the_last_frame_by_its_field():
    model = EncoderForecaster(1, (4, 6), 3, horizon=2, stem_channels=4, output="flow").double()
    x = frames(t=3)
    with torch.no_grad():
        still, _ = model(x)
        model.head.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))  # (dy, dx) = (0, 1) pixel, no residual
        moved, _ = model(x)
    last = x[:, -1:].expand(-1, 2, -1, -1, -1)
    torch.testing.assert_close(still, last, **EXACT)
    torch.testing.assert_close(moved, torch.cat([last[..., 1:], last[..., -1:]], dim=-1), **EXACT)


@pytest.mark.parametrize("every_step", [False, True])
@pytest.mark.parametrize("advect", [False, True])
def test_the_training_step_compiles_as_one_graph(every_step, advect):
    # torch.compile must trace a chunk, from a zero and from a carried state, with no graph break: a
    # break splits the compiled step and costs it speed on a GPU (torch 2.11 broke on bool() of the
    # state's list). fullgraph=True raises at a break; the eager backend traces without compiling.
    model = EveryStep(tiny_model(advect=advect)) if every_step else tiny_model(advect=advect)
    net = torch.compile(model, fullgraph=True, backend="eager")
    x = frames(t=4, dtype=torch.float32)
    try:
        pred, state = net(x)
        pred2, _ = net(x, state.detach())
        (pred.sum() + pred2.sum()).backward()
    finally:
        torch._dynamo.reset()
    eager, _ = model(x, model(x)[1].detach())
    torch.testing.assert_close(pred2, eager, atol=1e-6, rtol=1e-5)


# -- sizes ---------------------------------------------------------------------------------------------
def test_trained_at_64_runs_at_96():
    model = tiny_model(horizon=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    clip = frames(b=1, t=4, size=64, dtype=torch.float32)
    for _ in range(2):
        pred, _ = model(clip[:, :2])
        loss = F.mse_loss(pred, clip[:, 2:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred, state = model(frames(b=1, t=2, size=96, dtype=torch.float32))
    assert pred.shape == (1, 2, 1, 96, 96) and torch.isfinite(pred).all()
    assert [tuple(h.shape) for h, _ in state] == model.state_shapes(1, 96, 96) == [(1, 4, 48, 48), (1, 6, 24, 24)]


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_other_stem_strides_keep_the_frame_size(stride):
    model = tiny_model(stem_stride=stride, horizon=2)
    size = 2 * stride * 4
    with torch.no_grad():
        pred, state = model(frames(b=1, t=2, size=size, dtype=torch.float32))
    assert pred.shape == (1, 2, 1, size, size)
    assert [tuple(h.shape) for h, _ in state] == model.state_shapes(1, size, size)


def test_rgb_frames_and_config_round_trip():
    model = tiny_model(in_channels=3, hidden_channels=(4,), stem_stride=1, horizon=2)
    twin = EncoderForecaster.from_config(asdict(model.cfg))
    twin.load_state_dict(model.state_dict())
    assert EncoderForecaster.from_config(model.cfg).cfg == model.cfg
    x = frames(b=1, t=2, c=3, size=8, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(twin(x)[0], model(x)[0], atol=0, rtol=0)
    assert model(x)[0].shape == (1, 2, 3, 8, 8)


# -- errors --------------------------------------------------------------------------------------------
def test_frames_not_divisible_by_stride_is_a_clear_error():
    model = tiny_model()  # stride 2 · 2 = 4
    msg = re.escape("EncoderForecaster needs H and W divisible by its stride 4, got 10×12")
    with pytest.raises(ValueError, match=msg):
        model(torch.rand(1, 2, 1, 10, 12))


def test_wrong_input_channels_is_a_clear_error():
    model = tiny_model()
    msg = re.escape("EncoderForecaster expected frames [B, T, 1, H, W], got [1, 2, 3, 16, 16]")
    with pytest.raises(ValueError, match=msg):
        model(torch.rand(1, 2, 3, 16, 16))
    with pytest.raises(ValueError, match=re.escape("got [2, 1, 16, 16]")):
        model(torch.rand(2, 1, 16, 16))


def test_kernel_list_of_wrong_length_is_a_clear_error():
    with pytest.raises(ValueError, match="kernel_size has 3 entries for 2 levels"):
        ModelConfig(hidden_channels=(4, 8), kernel_size=(3, 3, 3)).kernels()


# -- package -------------------------------------------------------------------------------------------
def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_import_does_not_load_av_or_torchvision():
    code = (
        "import convlstm_cli, sys; import convlstm_cli.model.forecaster; "
        "convlstm_cli.EncoderForecaster, convlstm_cli.StreamState, convlstm_cli.ConvLSTM; "
        "bad = [m for m in ('av', 'torchvision') if m in sys.modules]; "
        "assert not bad, bad"
    )
    r = run_python("-c", code)
    assert r.returncode == 0, r.stderr


def test_python_m_version_and_help():
    import convlstm_cli

    r = run_python("-m", "convlstm_cli", "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"convlstm-cli {convlstm_cli.__version__}"
    r = run_python("-m", "convlstm_cli", "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and "--version" in r.stdout
