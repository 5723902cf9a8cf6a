"""An advected state (`model.advect`): the flow moves (h, c) as an independent shift by indexing does,
a zero flow is exactly the plain model, and streaming stays exact (chunked equals one pass)."""

from __future__ import annotations

import pytest
import torch

from convlstm_cli import device as dev
from convlstm_cli.model.convlstm import ConvLSTM, shift
from convlstm_cli.model.forecaster import EncoderForecaster

EXACT = {"atol": 1e-12, "rtol": 0.0}


def constant_flow(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    flow = torch.empty(x.shape[0], 2, *x.shape[-2:], dtype=x.dtype)
    flow[:, 0], flow[:, 1] = dy, dx
    return flow


def test_a_whole_cell_flow_moves_content_by_one_cell_edges_repeated():
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    right = x + shift(x, constant_flow(x, 0, 1))  # each cell takes its right neighbour's value
    torch.testing.assert_close(right, torch.cat([x[..., 1:], x[..., -1:]], dim=-1), **EXACT)
    up = x + shift(x, constant_flow(x, -1, 0))  # each cell takes the value above it
    torch.testing.assert_close(up, torch.cat([x[..., :1, :], x[..., :-1, :]], dim=-2), **EXACT)
    half = x + shift(x, constant_flow(x, 0, 0.5))  # bilinear: half way between the two
    torch.testing.assert_close(half[..., :-1], (x[..., :-1] + x[..., 1:]) / 2, **EXACT)
    assert not shift(x, constant_flow(x, 0, 0)).any()


def test_shift_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64) * 0.8 - 0.4).requires_grad_()
    assert torch.autograd.gradcheck(shift, (x, flow))


def tiny(advect: bool, flow_std: float = 0.0) -> EncoderForecaster:
    torch.manual_seed(0)
    model = EncoderForecaster(1, (4, 6), 3, horizon=2, stem_channels=4, advect=advect).double()
    with torch.no_grad():
        model.head.weight.normal_(std=0.3)  # predictions that depend on the state
        for layer in [*model.encoder, *model.forecaster]:
            if layer.conv_flow is not None:
                layer.conv_flow.weight.normal_(std=flow_std)
    return model


def test_an_untrained_advecting_model_is_exactly_the_plain_model():
    adv, plain = tiny(True), tiny(False)
    plain.load_state_dict({k: v for k, v in adv.state_dict().items() if "conv_flow" not in k})
    x = torch.rand(2, 5, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        (a, sa), (p, sp) = adv(x), plain(x)
    torch.testing.assert_close(a, p, atol=0, rtol=0)
    for (h1, c1), (h2, c2) in zip(sa, sp):
        torch.testing.assert_close((h1, c1), (h2, c2), atol=0, rtol=0)


def test_an_advecting_layer_steps_the_plain_cell_on_the_moved_state():
    torch.manual_seed(1)
    layer = ConvLSTM(3, 4, 3, advect=True).double()
    with torch.no_grad():
        layer.conv_flow.bias.copy_(torch.tensor([0.0, 1.0]))  # every cell takes its right neighbour's state
    x = torch.rand(2, 4, 3, 6, 8, dtype=torch.float64)
    h0, c0 = torch.rand(2, 2, 4, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        out, (h, c) = layer(x, (h0, c0))
        want, state = [], (h0, c0)
        gx = layer.input_gates(x)
        for t in range(x.shape[1]):
            moved = tuple(torch.cat([s[..., 1:], s[..., -1:]], dim=-1) for s in state)
            layer.conv_flow, flow = None, layer.conv_flow  # the plain cell on the moved state
            state = layer.cell(gx[:, t], moved)
            layer.conv_flow = flow
            want.append(state[0])
    torch.testing.assert_close(out, torch.stack(want, dim=1), **EXACT)
    torch.testing.assert_close((h, c), state, **EXACT)


@pytest.mark.parametrize("every_step", [False, True])
def test_an_advecting_model_streams_chunked_as_one_pass(every_step):
    model = tiny(True, flow_std=0.3)
    x = torch.rand(2, 7, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        want, want_state = model(x, every_step=every_step)
        state, got = None, []
        for chunk in x.split([3, 4], dim=1):
            pred, state = model(chunk, state, every_step=every_step)
            got.append(pred)
        plain = tiny(False)
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if "conv_flow" not in k})
        unmoved, _ = plain(x, every_step=every_step)
    for (h1, c1), (h2, c2) in zip(state, want_state):
        torch.testing.assert_close((h1, c1), (h2, c2), **EXACT)
    torch.testing.assert_close(pred[:, -2:], want[:, -2:], **EXACT)
    if every_step:  # frames 1 … 6 one step ahead: chunk 1 gives 1, 2 and its forecast's first, 3
        torch.testing.assert_close(torch.cat([got[0][:, :3], got[1][:, :3]], 1), want[:, :6], **EXACT)
    assert (want - unmoved).abs().max() > 1e-3  # the flow does move the state


def test_an_advecting_model_equals_its_naive_reference():
    from convlstm_cli.model.reference import to_reference

    model = tiny(True, flow_std=0.3)
    ref = to_reference(model).double()
    ref.load_state_dict(model.state_dict())
    x = torch.rand(2, 5, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        (p, s), (rp, rs) = model(x), ref(x)
    torch.testing.assert_close(p, rp, **EXACT)
    for (h1, c1), (h2, c2) in zip(s, rs):
        torch.testing.assert_close((h1, c1), (h2, c2), **EXACT)


def test_an_advecting_model_under_bf16_autocast_keeps_a_float32_state():
    model = tiny(True, flow_std=0.3).float()
    x = torch.rand(2, 3, 1, 16, 16)
    with dev.autocast(torch.device("cpu"), "bf16"):
        pred, state = model(x)
        pred.square().mean().backward()
    assert all(t.dtype == torch.float32 for hc in state for t in hc) and torch.isfinite(pred).all()
    assert all(layer.conv_flow.weight.grad.abs().sum() > 0 for layer in model.encoder)
