"""The seed recipe made real: ConvLSTM2d against torch.nn.LSTM, Stateful's chunking, detaching,
per-lane resets, batch-size policy, state_dict and .to(), and the recipe's three examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from convlstm_cli import ConvLSTM, ConvLSTM2d, EncoderForecaster, Stateful

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXACT = {"atol": 1e-9, "rtol": 0.0}


def lstm_twin(lstm: nn.LSTM) -> ConvLSTM2d:
    """A ConvLSTM2d with kernel 1 holding exactly `lstm`'s weights (float64)."""
    m = ConvLSTM2d(lstm.input_size, lstm.hidden_size, 1, num_layers=lstm.num_layers, forget_bias=0.0,
                   batch_first=lstm.batch_first).double()
    with torch.no_grad():
        for k, layer in enumerate(m.layers):
            layer.conv_x.weight.copy_(getattr(lstm, f"weight_ih_l{k}")[:, :, None, None])
            layer.conv_h.weight.copy_(getattr(lstm, f"weight_hh_l{k}")[:, :, None, None])
            layer.conv_x.bias.copy_(getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}"))
    return m


@pytest.mark.parametrize("batch_first", [False, True])
def test_convlstm2d_with_kernel_1_on_1x1_frames_is_nn_lstm(batch_first):
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, num_layers=2, batch_first=batch_first).double()
    m = lstm_twin(lstm)
    x = torch.randn(3, 6, 5, dtype=torch.float64) if batch_first else torch.randn(6, 3, 5, dtype=torch.float64)
    h0, c0 = torch.randn(2, 3, 7, dtype=torch.float64), torch.randn(2, 3, 7, dtype=torch.float64)
    want, (wh, wc) = lstm(x, (h0, c0))
    got, (gh, gc) = m(x[..., None, None], (h0[..., None, None], c0[..., None, None]))
    torch.testing.assert_close(got[..., 0, 0], want, **EXACT)
    torch.testing.assert_close(gh[..., 0, 0], wh, **EXACT)
    torch.testing.assert_close(gc[..., 0, 0], wc, **EXACT)


def test_convlstm2d_per_layer_sizes_and_dropout():
    m = ConvLSTM2d(3, [4, 6], [3, 5], num_layers=2, batch_first=True, dropout=0.5)
    out, (h, c) = m(torch.rand(2, 5, 3, 8, 8))
    assert out.shape == (2, 5, 6, 8, 8) and isinstance(h, tuple) and [t.shape[1] for t in h] == [4, 6]
    assert m.layers[1].kernel_size == 5
    m.eval()
    with torch.no_grad():
        a, _ = m(torch.ones(1, 2, 3, 8, 8))
        b, _ = m(torch.ones(1, 2, 3, 8, 8))
    torch.testing.assert_close(a, b)  # dropout only in training
    with pytest.raises(ValueError, match="hidden_channels has 3 entries"):
        ConvLSTM2d(3, [4, 4, 4], 3, num_layers=2)


def chunks_equal_one_pass(make, x, dim: int):
    """Outputs of chunked calls through Stateful, concatenated, against one call on the whole input."""
    torch.manual_seed(0)
    module = make().double()
    whole = module(x, None)[0]
    s = Stateful(module)
    parts = [s(c) for c in x.split([2, 1, 3], dim=dim)]
    return torch.cat(parts, dim=dim), whole


@pytest.mark.parametrize("kind", ["lstm", "gru", "convlstm2d", "convlstm"])
def test_chunked_calls_through_stateful_equal_one_pass(kind):
    makes = {
        "lstm": (lambda: nn.LSTM(3, 5, 2, batch_first=True), torch.randn(2, 6, 3, dtype=torch.float64), 1),
        "gru": (lambda: nn.GRU(3, 5), torch.randn(6, 2, 3, dtype=torch.float64), 0),
        "convlstm2d": (lambda: ConvLSTM2d(2, 4, 3, num_layers=2), torch.randn(6, 2, 2, 5, 5, dtype=torch.float64), 0),
        "convlstm": (lambda: ConvLSTM(2, 4), torch.randn(2, 6, 2, 5, 5, dtype=torch.float64), 1),
    }
    make, x, dim = makes[kind]
    got, want = chunks_equal_one_pass(make, x, dim)
    torch.testing.assert_close(got, want, **EXACT)


def test_stateful_encoder_forecaster_carries_its_stream_state():
    torch.manual_seed(0)
    model = EncoderForecaster(1, (4, 6), 3, 2, 4, 2).double()
    with torch.no_grad():
        model.head.weight.normal_(std=0.3)
    x = torch.rand(2, 6, 1, 16, 16, dtype=torch.float64)
    want, _ = model(x)
    s = Stateful(model)
    s(x[:, :4])
    torch.testing.assert_close(s(x[:, 4:]), want, **EXACT)


def test_a_second_backward_over_consecutive_batches_works():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, batch_first=True)
    s = Stateful(lstm)
    for _ in range(3):
        s(torch.randn(2, 4, 3)).sum().backward()  # the recipe's second backward crashed here
    kept = Stateful(lstm, detach=False)  # without detaching the recipe's failure is back
    kept(torch.randn(2, 4, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        kept(torch.randn(2, 4, 3)).sum().backward()


def test_batch_size_change_is_refused_or_reset_by_policy():
    s = Stateful(nn.GRU(3, 5, batch_first=True))
    s(torch.randn(4, 2, 3))
    with pytest.raises(ValueError, match="batch size changed from 4 to 3.*reset"):
        s(torch.randn(3, 2, 3))
    s.reset()
    assert s(torch.randn(3, 2, 3)).shape == (3, 2, 5)
    policy = Stateful(nn.GRU(3, 5, batch_first=True), on_batch_change="reset")
    policy(torch.randn(4, 2, 3))
    torch.manual_seed(1)
    y = torch.randn(3, 2, 3)
    torch.testing.assert_close(policy(y), nn.GRU.forward(policy.module, y)[0])  # fresh lanes


def test_reset_of_one_lane_does_not_leak_into_the_others():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, 2, batch_first=True).double()
    a, b = torch.randn(3, 4, 3, dtype=torch.float64), torch.randn(3, 4, 3, dtype=torch.float64)
    s = Stateful(lstm)
    s(a)
    s.reset(torch.tensor([False, True, False]))
    got = s(b)
    carried = lstm(torch.cat([a, b], 1))[0][:, 4:]
    fresh = lstm(b)[0]
    torch.testing.assert_close(got[[0, 2]], carried[[0, 2]], **EXACT)
    torch.testing.assert_close(got[1], fresh[1], **EXACT)
    assert (got[1] - carried[1]).abs().max() > 1e-3  # the reset lane really restarted


def test_state_dict_round_trips_the_carried_state(tmp_path):
    torch.manual_seed(0)
    s = Stateful(ConvLSTM2d(2, [3, 4], 3, num_layers=2, batch_first=True))
    s(torch.rand(2, 3, 2, 6, 6))
    torch.save(s.state_dict(), tmp_path / "s.pt")
    other = Stateful(ConvLSTM2d(2, [3, 4], 3, num_layers=2, batch_first=True))
    other.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    x = torch.rand(2, 2, 2, 6, 6)
    torch.testing.assert_close(other(x), s(x))
    fresh = Stateful(ConvLSTM2d(2, [3, 4], 3, num_layers=2, batch_first=True))
    fresh.load_state_dict({k: v for k, v in s.state_dict().items() if "extra" not in k}, strict=False)
    assert (fresh(x) - s(x)).abs().max() > 1e-4  # the carried state is what made them equal


def test_to_moves_the_carried_state():
    s = Stateful(nn.LSTM(3, 5))
    s(torch.randn(4, 2, 3))
    s.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in s.state)
    s.to("meta")
    assert all(t.device.type == "meta" for t in s.state) and s.module.weight_ih_l0.device.type == "meta"


@pytest.mark.parametrize("script", ["stateful_lstm.py", "stateful_convlstm.py", "stateful_wrapper.py"])
def test_the_recipe_examples_run(script):
    r = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stdout.strip()
