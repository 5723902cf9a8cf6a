"""StreamState: lane resets, truncated BPTT, checkpoints, devices and shape errors."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from convlstm_cli.model.convlstm import ConvLSTM
from convlstm_cli.model.forecaster import EncoderForecaster
from convlstm_cli.model.state import StreamState

EXACT = {"atol": 1e-9, "rtol": 0.0}


def tiny_model(**kw) -> EncoderForecaster:
    torch.manual_seed(0)
    args = {"in_channels": 1, "hidden_channels": (4, 6), "kernel_size": 3, "horizon": 2,
            "stem_channels": 4, "stem_stride": 2}
    model = EncoderForecaster(**(args | kw))
    with torch.no_grad():  # a head that passes the state through (the default starts exactly at copy-last)
        model.head.weight.normal_(std=0.3)
    return model


def frames(b=3, t=6, size=16, seed=1, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 1, size, size, generator=g, dtype=dtype)


def assert_states_close(a: StreamState, b: StreamState, **tol) -> None:
    assert len(a) == len(b)
    for (h1, c1), (h2, c2) in zip(a, b, strict=True):
        torch.testing.assert_close(h1, h2, **tol)
        torch.testing.assert_close(c1, c2, **tol)


# -- reset -----------------------------------------------------------------------------------------
def test_reset_lanes_restart_fresh_others_continue():
    model = tiny_model().double()
    x = frames(b=3, t=6)
    first, second = x[:, :3], x[:, 3:]
    with torch.no_grad():
        _, carried = model(first)
        cont_pred, cont_state = model(second, carried.clone())
        mask = torch.tensor([True, False, True])
        pred, state = model(second, carried.reset(mask))
        fresh_pred, fresh_state = model(second)  # every lane from zero
    for lane, restarted in enumerate(mask.tolist()):
        want_pred, want_state = (fresh_pred, fresh_state) if restarted else (cont_pred, cont_state)
        torch.testing.assert_close(pred[lane], want_pred[lane], **EXACT)
        for (h, c), (wh, wc) in zip(state, want_state, strict=True):
            torch.testing.assert_close(h[lane], wh[lane], **EXACT)
            torch.testing.assert_close(c[lane], wc[lane], **EXACT)
    # The check can fail: a restarted lane differs from its continuation.
    assert (pred[0] - cont_pred[0]).abs().max() > 1e-6


def test_reset_of_a_layer_state_wrapped_in_streamstate():
    torch.manual_seed(2)
    layer = ConvLSTM(2, 3).double()
    x = torch.randn(2, 4, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        _, hc = layer(x[:, :2])
        state = StreamState([hc]).reset(torch.tensor([False, True]))
        out, _ = layer(x[:, 2:], state[0])
        fresh, _ = layer(x[:, 2:])
        cont, _ = layer(x[:, 2:], hc)
    torch.testing.assert_close(out[1], fresh[1], **EXACT)
    torch.testing.assert_close(out[0], cont[0], **EXACT)


def test_reset_of_detached_state_is_in_place():
    model = tiny_model()
    _, state = model(frames(dtype=torch.float32))
    state = state.detach()
    before = [(h.clone(), c.clone()) for h, c in state]
    ptrs = [(h.data_ptr(), c.data_ptr()) for h, c in state]
    mask = torch.tensor([False, True, False])
    out = state.reset(mask)
    assert out is state
    assert [(h.data_ptr(), c.data_ptr()) for h, c in state] == ptrs
    for (h, c), (h0, c0) in zip(state, before, strict=True):
        assert h[1].abs().sum() == 0 and c[1].abs().sum() == 0
        assert h0[1].abs().sum() > 0  # so the zeroing is not vacuous
        torch.testing.assert_close(h[[0, 2]], h0[[0, 2]], atol=0, rtol=0)
        torch.testing.assert_close(c[[0, 2]], c0[[0, 2]], atol=0, rtol=0)


def test_reset_of_state_in_a_graph_uses_new_tensors_and_keeps_gradients():
    model = tiny_model().double()
    x = frames(b=3, t=2).requires_grad_()
    _, state = model(x)
    olds = [(h, c) for h, c in state]
    state = state.reset(torch.tensor([True, False, False]))
    for (h, c), (h0, c0) in zip(state, olds, strict=True):
        assert h.data_ptr() != h0.data_ptr() and c.data_ptr() != c0.data_ptr()
        assert h[0].abs().sum() == 0 and h0[0].abs().sum() > 0  # the originals are untouched
    loss = sum(h.sum() + c.sum() for h, c in state)
    loss.backward()  # would fail if saved tensors had been overwritten in place
    grad = x.grad.flatten(1).abs().sum(1)
    assert grad[0] == 0 and (grad[1:] > 0).all()


def test_reset_with_wrong_mask_and_empty_state():
    empty = StreamState()
    assert empty.reset(torch.tensor([True])) is empty and not empty.initialized
    state = StreamState([(torch.zeros(3, 2, 4, 4), torch.zeros(3, 2, 4, 4))])
    with pytest.raises(ValueError, match=re.escape("reset mask expected shape [3], got [2]")):
        state.reset(torch.tensor([True, False]))
    with pytest.raises(ValueError, match=re.escape("reset mask expected shape [3], got [3, 1]")):
        state.reset(torch.zeros(3, 1, dtype=torch.bool))


# -- truncated BPTT ----------------------------------------------------------------------------------
def test_tbptt_several_steps_with_detach_and_reset():
    model = tiny_model().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    video = frames(b=2, t=4 * 5)
    state, losses = StreamState(), []
    start = [p.detach().clone() for p in model.parameters()]
    for k in range(4):
        chunk = video[:, 5 * k : 5 * k + 5]
        state = state.reset(torch.tensor([k == 2, False]))
        pred, state = model(chunk[:, :3], state)
        loss = F.mse_loss(pred, chunk[:, 3:])
        opt.zero_grad()
        loss.backward()  # a second backward through chunk k-1 would raise here
        opt.step()
        state = state.detach()
        losses.append(loss.item())
        assert not any(t.requires_grad for hc in state for t in hc)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any((p - p0).abs().max() > 0 for p, p0 in zip(model.parameters(), start, strict=True))


def two_chunks(detach: bool):
    model = tiny_model().double()
    x1 = frames(b=2, t=3, seed=3).requires_grad_()
    x2 = frames(b=2, t=3, seed=4)
    pred1, state = model(x1)
    pred1.sum().backward()
    x1.grad = None
    if detach:
        state = state.detach()
    pred2, _ = model(x2, state)
    return x1, pred2.sum()


def test_tbptt_no_gradient_reaches_the_earlier_chunk():
    x1, loss2 = two_chunks(detach=True)
    loss2.backward()
    assert x1.grad is None


def test_without_detach_the_second_backward_fails():
    # Shows the test above can fail: the same run without detach() reaches chunk 1's freed graph.
    x1, loss2 = two_chunks(detach=False)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss2.backward()


def test_without_detach_gradient_reaches_the_earlier_chunk():
    model = tiny_model().double()
    x1 = frames(b=2, t=3, seed=3).requires_grad_()
    _, state = model(x1)
    pred2, _ = model(frames(b=2, t=3, seed=4), state)
    pred2.sum().backward()
    assert x1.grad is not None and x1.grad.abs().sum() > 0


# -- checkpoints and devices ---------------------------------------------------------------------------
def test_state_dict_round_trip_through_torch_save(tmp_path):
    model = tiny_model()
    x = frames(b=2, t=4, dtype=torch.float32)
    with torch.no_grad():
        _, state = model(x[:, :2])
    sd = state.state_dict()
    assert sorted(sd) == ["c0", "c1", "h0", "h1"]
    torch.save(sd, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    restored = StreamState().load_state_dict(loaded)
    assert_states_close(restored, state, atol=0, rtol=0)
    with torch.no_grad():
        want, _ = model(x[:, 2:], state)
        got, _ = model(x[:, 2:], restored)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_state_dict_is_detached_cpu_and_load_rejects_bad_keys():
    h = torch.randn(1, 2, 3, 3, requires_grad=True)
    sd = StreamState([(h * 1, h * 2)]).state_dict()
    assert not sd["h0"].requires_grad and sd["h0"].device.type == "cpu"
    with pytest.raises(ValueError, match="not a StreamState state_dict"):
        StreamState().load_state_dict({"h0": h, "x0": h})
    assert not StreamState().load_state_dict({}).initialized


def test_to_device_moves_every_tensor_and_keeps_values():
    state = StreamState([(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)) for _ in range(2)])
    moved = state.to("meta")  # a real device change without needing a GPU
    assert all(t.device.type == "meta" and t.dtype == torch.float32 for hc in moved for t in hc)
    assert [tuple(h.shape) for h, _ in moved] == [(2, 3, 4, 4)] * 2
    back = state.to(torch.device("cpu"))
    assert back is not state
    assert_states_close(back, state, atol=0, rtol=0)
    if torch.cuda.is_available():
        assert_states_close(state.to("cuda").to("cpu"), state, atol=0, rtol=0)
    sd = state.state_dict()
    assert StreamState().load_state_dict(sd, device="meta")[0][0].device.type == "meta"


def test_clone_detach_and_queries():
    h = torch.randn(2, 3, 4, 4, requires_grad=True)
    state = StreamState([(h * 1, h * 2)])
    assert state.batch_size == 2 and len(state) == 1 and state.initialized
    assert "(2, 3, 4, 4)" in repr(state)
    cl = state.clone()
    assert cl[0][0].data_ptr() != state[0][0].data_ptr()
    assert state.detach() is state and not state[0][0].requires_grad
    assert StreamState().batch_size is None


# -- shape errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("b", "size", "hidden", "what", "expected", "got"),
    [
        (3, 16, (4, 6), "batch size", [2, 4, 8, 8], [3, 4, 8, 8]),
        (2, 32, (4, 6), "resolution", [2, 4, 8, 8], [2, 4, 16, 16]),
        (2, 16, (5, 6), "channels", [2, 4, 8, 8], [2, 5, 8, 8]),
    ],
)
def test_mismatched_state_is_a_clear_error(b, size, hidden, what, expected, got):
    other = tiny_model(hidden_channels=hidden)
    with torch.no_grad():
        _, state = other(frames(b=b, t=1, size=size, dtype=torch.float32))
    model = tiny_model()
    msg = re.escape(f"StreamState level 0 h: wrong {what}: expected [B, C, H, W] = {expected}, got {got}")
    with pytest.raises(ValueError, match=msg):
        model(frames(b=2, t=1, size=16, dtype=torch.float32), state)


def test_wrong_number_of_levels_is_a_clear_error():
    model = tiny_model()
    state = StreamState([(torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8))])
    with pytest.raises(ValueError, match="StreamState expected 2 levels, got 1"):
        model(frames(b=2, t=1, dtype=torch.float32), state)
