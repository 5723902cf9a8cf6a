"""ConvLSTM layer: exactness against torch.nn.LSTM and the naive reference, chunking, gradients,
autocast, memory format and shape errors. Exactness tests run in float64."""

from __future__ import annotations

import contextlib
import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlstm_cli import device as dev
from convlstm_cli.errors import InputError
from convlstm_cli.model import convlstm
from convlstm_cli.model.convlstm import ConvLSTM, one_weight_gradient
from convlstm_cli.model.reference import ReferenceConvLSTM, to_reference

EXACT = {"atol": 1e-9, "rtol": 0.0}


def double_reference(model: nn.Module) -> nn.Module:
    """to_reference(model) in float64 with model's exact weights (to_reference itself rounds to fp32)."""
    ref = to_reference(model).double()
    ref.load_state_dict(model.state_dict())
    return ref


def lstm_pair(cin: int = 3, hidden: int = 4) -> tuple[nn.LSTM, ConvLSTM]:
    """A float64 nn.LSTM and a kernel-1 ConvLSTM holding the same weights."""
    torch.manual_seed(0)
    lstm = nn.LSTM(cin, hidden, batch_first=True).double()
    layer = ConvLSTM(cin, hidden, kernel_size=1).double()
    with torch.no_grad():
        layer.conv_x.weight.copy_(lstm.weight_ih_l0.view(4 * hidden, cin, 1, 1))
        layer.conv_x.bias.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
        layer.conv_h.weight.copy_(lstm.weight_hh_l0.view(4 * hidden, hidden, 1, 1))
    assert layer.conv_h.bias is None  # the one bias lives on conv_x
    return lstm, layer


def test_kernel1_on_1x1_equals_nn_lstm_from_zero_state():
    lstm, layer = lstm_pair()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    want, (hn, cn) = lstm(x)
    out, (h, c) = layer(x[..., None, None])
    assert out.shape == (2, 6, 4, 1, 1) and h.dtype == torch.float64
    torch.testing.assert_close(out[..., 0, 0], want, **EXACT)
    torch.testing.assert_close(h[..., 0, 0], hn[0], **EXACT)
    torch.testing.assert_close(c[..., 0, 0], cn[0], **EXACT)


def test_kernel1_on_1x1_equals_nn_lstm_from_given_state():
    lstm, layer = lstm_pair()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 2, 4, dtype=torch.float64).unbind(0)
    want, (hn, cn) = lstm(x, (h0[None], c0[None]))
    out, (h, c) = layer(x[..., None, None], (h0[..., None, None], c0[..., None, None]))
    torch.testing.assert_close(out[..., 0, 0], want, **EXACT)
    torch.testing.assert_close(h[..., 0, 0], hn[0], **EXACT)
    torch.testing.assert_close(c[..., 0, 0], cn[0], **EXACT)


def test_lstm_comparison_can_fail():
    # Gate order matters: swapping the f and g blocks must break the equality above.
    lstm, layer = lstm_pair()
    with torch.no_grad():
        w = layer.conv_x.weight
        w[4:8], w[8:12] = w[8:12].clone(), w[4:8].clone()
    x = torch.randn(1, 3, 3, dtype=torch.float64)
    out, _ = layer(x[..., None, None])
    assert (out[..., 0, 0] - lstm(x)[0]).abs().max() > 1e-3


def manual_peephole_step(layer: ConvLSTM, x, h, c):
    """Shi et al. eqs. (3) written out per gate with per-channel peepholes (test's own formula)."""
    pad, hc = layer.kernel_size // 2, layer.hidden_channels
    wx, wh, b = layer.conv_x.weight, layer.conv_h.weight, layer.conv_x.bias
    pre = [F.conv2d(x, wx[k * hc:(k + 1) * hc], b[k * hc:(k + 1) * hc], padding=pad)
           + F.conv2d(h, wh[k * hc:(k + 1) * hc], padding=pad) for k in range(4)]
    wci, wcf, wco = layer.peephole
    i = torch.sigmoid(pre[0] + wci * c)
    f = torch.sigmoid(pre[1] + wcf * c)
    c_new = f * c + i * torch.tanh(pre[2])
    o = torch.sigmoid(pre[3] + wco * c_new)
    return o * torch.tanh(c_new), c_new


def test_peephole_matches_the_paper_equations():
    torch.manual_seed(1)
    layer = ConvLSTM(2, 3, kernel_size=3, peephole=True).double()
    with torch.no_grad():
        layer.peephole.normal_()
    x = torch.randn(2, 3, 2, 5, 5, dtype=torch.float64)
    h = c = torch.zeros(2, 3, 5, 5, dtype=torch.float64)
    outs = []
    for t in range(3):
        h, c = manual_peephole_step(layer, x[:, t], h, c)
        outs.append(h)
    out, (h1, c1) = layer(x)
    torch.testing.assert_close(out, torch.stack(outs, 1), **EXACT)
    torch.testing.assert_close(c1, c, **EXACT)


def test_chunked_with_carried_state_equals_one_pass():
    torch.manual_seed(2)
    layer = ConvLSTM(2, 4, kernel_size=3).double()
    x = torch.randn(2, 7, 2, 6, 6, dtype=torch.float64)
    want, (hw, cw) = layer(x)
    state, outs = None, []
    for chunk in x.split([3, 1, 3], dim=1):
        out, state = layer(chunk, state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), want, **EXACT)
    torch.testing.assert_close(state[0], hw, **EXACT)
    torch.testing.assert_close(state[1], cw, **EXACT)


@pytest.mark.parametrize("peephole", [False, True])
def test_optimized_layer_equals_naive_reference(peephole):
    torch.manual_seed(3)
    layer = ConvLSTM(3, 4, kernel_size=5, peephole=peephole).double()
    if peephole:
        with torch.no_grad():
            layer.peephole.normal_()
    ref = double_reference(layer)
    assert type(ref) is ReferenceConvLSTM and type(layer) is ConvLSTM
    x = torch.randn(2, 4, 3, 7, 9, dtype=torch.float64)
    h0, c0 = torch.randn(2, 2, 4, 7, 9, dtype=torch.float64).unbind(0)
    for state in (None, (h0, c0)):
        out, (h, c) = layer(x, state)
        rout, (rh, rc) = ref(x, state)
        torch.testing.assert_close(out, rout, **EXACT)
        torch.testing.assert_close(h, rh, **EXACT)
        torch.testing.assert_close(c, rc, **EXACT)


def test_input_free_layer_equals_reference():
    torch.manual_seed(4)
    layer = ConvLSTM(0, 3, kernel_size=3, peephole=True).double()
    h0, c0 = torch.randn(2, 2, 3, 4, 4, dtype=torch.float64).unbind(0)
    out, (h, c) = layer(None, (h0, c0), steps=3)
    rout, (rh, rc) = double_reference(layer)(None, (h0, c0), steps=3)
    assert out.shape == (2, 3, 3, 4, 4)
    torch.testing.assert_close(out, rout, **EXACT)
    torch.testing.assert_close(c, rc, **EXACT)


def test_gradcheck_tiny_layer_inputs_state_and_weights():
    torch.manual_seed(5)
    layer = ConvLSTM(1, 2, kernel_size=3, peephole=True).double()
    with torch.no_grad():
        layer.peephole.normal_(std=0.5)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(1, 2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)

    def fn(x, h0, c0, *ps):
        out, (h, c) = torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (x, (h0, c0)))
        return out, h, c

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *params))


def test_gradcheck_tiny_layer_fused_gates():
    # Without peepholes the cell's nonlinearities run as FusedGates, with a hand-written backward.
    torch.manual_seed(5)
    layer = ConvLSTM(1, 2, kernel_size=3).double()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(1, 3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    h0, c0 = torch.randn(2, 1, 2, 3, 3, dtype=torch.float64).unbind(0)

    def fn(x, h0, c0, *ps):
        out, (h, c) = torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (x, (h0, c0)))
        return out, c

    assert torch.autograd.gradcheck(fn, (x, h0.requires_grad_(), c0.requires_grad_(), *params))
    assert torch.autograd.gradcheck(lambda *a: fn(*a)[0], (x, h0, c0, *params))  # only h reaches the loss


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_gates_equal_the_plain_equations(autocast):
    """The fused cell (no peepholes) against the plain one (peepholes present, all zero): values and
    every gradient, in float64, and in bf16 autocast on a channels_last layer as training runs it."""
    torch.manual_seed(9)
    fused = ConvLSTM(3, 8, kernel_size=3)
    plain = ConvLSTM(3, 8, kernel_size=3, peephole=True)
    plain.load_state_dict({**fused.state_dict(), "peephole": torch.zeros(3, 8, 1, 1)})
    x = torch.rand(2, 5, 3, 8, 8)
    if autocast:
        fused, plain = (m.to(memory_format=torch.channels_last) for m in (fused, plain))
    else:
        fused, plain, x = fused.double(), plain.double(), x.double()
    grads = []
    for layer in (fused, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, (h, c) = layer(x.requires_grad_())
        (out.square().sum() + (c * torch.linspace(-1, 1, 8).view(8, 1, 1)).sum()).backward()
        grads.append([out, c, x.grad] + [p.grad for n, p in layer.named_parameters() if n != "peephole"])
        x.grad = None
    tol = {"atol": 2e-2, "rtol": 2e-2} if autocast else EXACT
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, **tol)


def graph_nodes(t: torch.Tensor, name: str) -> int:
    """How many autograd nodes of this type the graph of t holds."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(n for n, _ in node.next_functions)
    return sum(type(n).__name__ == name for n in seen)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
def test_batched_weight_gradient_equals_per_step_autograd(autocast, shared, monkeypatch):
    """On a CPU the recurrent weight gradient of an unroll is one convolution over all its steps
    (`_StepWeight`); within `one_weight_gradient` over all unrolls of the block. Against the naive
    reference (plain autograd, one weight gradient per step): every parameter's gradient, for a layer
    run as two chunks in one graph (two unrolls, state carried with its gradient) and for an
    input-free layer (W_h with a bias); float64, and bf16 channels_last."""
    monkeypatch.setattr(convlstm, "BATCH_MIN_REDUCTION", 0)  # batch these small layers too
    torch.manual_seed(10)
    layers = ConvLSTM(3, 6, kernel_size=3), ConvLSTM(0, 6, kernel_size=3)
    x, state0 = torch.rand(2, 5, 3, 8, 8), torch.rand(2, 2, 6, 8, 8)
    for layer in layers:
        ref = to_reference(layer)
        if autocast:
            layer, ref = (m.to(memory_format=torch.channels_last) for m in (layer, ref))
        else:
            layer, ref, x, state0 = layer.double(), double_reference(layer), x.double(), state0.double()
        grads = []
        for m in (layer, ref):
            scope = one_weight_gradient() if shared else contextlib.nullcontext()
            with scope, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                if m.in_channels:
                    out1, state = m(x[:, :3])
                    out2, (h, c) = m(x[:, 3:], state)
                    out = torch.cat([out1, out2], 1)
                else:
                    out, (h, c) = m(None, tuple(state0.unbind(0)), steps=4)
            loss = out.square().sum() + c.sum()
            if m is layer:  # a weight-gradient node per unroll, or per weight for the whole block (W_x too)
                assert graph_nodes(loss, "_StepWeightBackward") == (2 if m.in_channels else 1)
                assert graph_nodes(loss, "_StepConvBackward") == (5 + 2 * shared if m.in_channels else 4)
            loss.backward()
            grads.append([p.grad for p in m.parameters()])
        assert [n for n, _ in layer.named_parameters()] == (["conv_x.weight", "conv_x.bias", "conv_h.weight"]
                                                            if layer.in_channels else ["conv_h.weight", "conv_h.bias"])
        tol = {"atol": 0.05, "rtol": 0.02} if autocast else EXACT
        for a, b in zip(*grads, strict=True):
            assert a.abs().max() > 0
            torch.testing.assert_close(a, b, **tol)


def test_channels_last_equals_contiguous():
    torch.manual_seed(6)
    layer = ConvLSTM(3, 8, kernel_size=3)
    cl = copy.deepcopy(layer).to(memory_format=torch.channels_last)
    assert cl.conv_h.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 3, 8, 8)
    out, (h, c) = layer(x)
    out2, (h2, c2) = cl(x)
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2, c, atol=1e-5, rtol=1e-5)


def test_autocast_bf16_keeps_float32_state_on_any_cpu():
    # Must run even where bf16 is emulated (slow) rather than native.
    torch.manual_seed(7)
    layer = ConvLSTM(2, 4, kernel_size=3)
    x = torch.rand(2, 3, 2, 6, 6)
    with dev.autocast(torch.device("cpu"), "bf16"):
        out, (h, c) = layer(x)
        out2, (h2, c2) = layer(x, (h, c))
    for t in (out, h, c, out2, h2, c2):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()


@pytest.mark.skipif(not dev.bf16_supported("cpu"), reason="this CPU has no native bf16")
def test_autocast_bf16_stays_close_to_fp32():
    torch.manual_seed(8)
    layer = ConvLSTM(2, 4, kernel_size=3)
    x = torch.rand(2, 6, 2, 8, 8)
    want, (hw, cw) = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = layer(x)
    assert c.dtype == torch.float32
    err = (out - want).abs().max().item()
    assert err < 3e-2, err
    torch.testing.assert_close(c, cw, atol=5e-2, rtol=0)


def test_device_helpers():
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert isinstance(dev.bf16_supported("cpu"), bool)
    assert dev.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    want = "bf16" if dev.bf16_supported("cpu") else "fp32"
    assert dev.resolve_precision("auto", torch.device("cpu")) == want
    with pytest.raises(InputError, match="expected auto, bf16 or fp32"):
        dev.resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(InputError, match="expected auto, cpu or cuda"):
        dev.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            dev.resolve_device("cuda")
    with dev.autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def test_wrong_input_channels_is_a_clear_error():
    layer = ConvLSTM(2, 4)
    msg = re.escape("ConvLSTM expected input [B, T, 2, H, W], got [1, 3, 5, 6, 6]")
    with pytest.raises(ValueError, match=msg):
        layer(torch.zeros(1, 3, 5, 6, 6))
    with pytest.raises(ValueError, match=re.escape("got [3, 2, 6, 6]")):
        layer(torch.zeros(3, 2, 6, 6))  # a missing time axis


@pytest.mark.parametrize(
    ("bad", "what"),
    [((3, 4, 6, 6), "batch"), ((2, 5, 6, 6), "channels"), ((2, 4, 6, 8), "resolution")],
)
def test_wrong_state_shape_is_a_clear_error(bad, what):
    layer = ConvLSTM(2, 4)
    x = torch.zeros(2, 3, 2, 6, 6)
    good = torch.zeros(2, 4, 6, 6)
    want = re.escape(f"ConvLSTM state h expected shape [2, 4, 6, 6], got {list(bad)}")
    with pytest.raises(ValueError, match=want):
        layer(x, (torch.zeros(bad), good))
    with pytest.raises(ValueError, match=re.escape(f"state c expected shape [2, 4, 6, 6], got {list(bad)}")):
        layer(x, (good, torch.zeros(bad)))


def test_bad_construction_and_input_free_call():
    with pytest.raises(ValueError, match="kernel_size must be odd.*got 4"):
        ConvLSTM(1, 2, kernel_size=4)
    with pytest.raises(ValueError, match="needs both a state and a number of steps"):
        ConvLSTM(0, 2)(None)


@pytest.mark.parametrize("channels_last", [False, True])
def test_zero_state_is_laid_out_like_a_returned_state(channels_last):
    layer = ConvLSTM(3, 6, 3)
    x = torch.randn(2, 3, 3, 8, 8)
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
    h0, c0 = layer.zero_state(x, 8, 8)
    with torch.no_grad():
        _, (h1, c1) = layer(x, (h0, c0))
    assert h0.data_ptr() != c0.data_ptr() and not h0.any() and not c0.any()
    assert (h0.stride(), c0.stride()) == (h1.stride(), c1.stride())
    assert h0.is_contiguous(memory_format=torch.channels_last) == channels_last
