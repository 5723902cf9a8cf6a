"""convlstm bench: the --quick report's keys, types and internal consistency; FLOP counting, tap
fractions and peak memory against independent computations; the OpenSTL-sized stack against its naive
twin. No timing thresholds: only what must hold on any machine."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from convlstm_cli.bench.flops import count_flops, valid_tap_fraction
from convlstm_cli.bench.stacked import StackedConvLSTM
from convlstm_cli.bench.timing import PeakMemory
from convlstm_cli.cli import app
from convlstm_cli.model.reference import ReferenceConvLSTM, to_reference


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> tuple[dict, str]:
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--quick", "--device", "cpu", "--threads", "1", "--json", str(path)])
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text()), result.output


def finite_numbers(obj, where="report"):
    """Every number in a JSON tree, with its path; fails on NaN/inf (JSON writes those as null)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from finite_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from finite_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        assert math.isfinite(obj), where
        yield where, obj


def test_quick_report_has_the_design_keys(quick_report):
    report, output = quick_report
    for key in ("speedup_vs_naive", "mfu"):
        assert isinstance(report["train"][key], float) and report["train"][key] > 0, key
    s = report["stream"]
    assert isinstance(s["flatness"], float) and s["flatness"] > 0
    assert s["window"] == 10 and set(s["windows"]) == {"10", "20"}
    assert s["speedup_vs_window"] == s["windows"]["10"]["speedup_vs_window"] > 0
    m = report["machine"]
    assert m["torch"] == torch.__version__ and m["threads"] == 1 and isinstance(m["bf16_supported"], bool)
    assert report["settings"]["quick"] is True and report["settings"]["device"] == "cpu"
    for dtype, peak in report["peaks"].items():
        # The peak is the faster of the two dense products timed, and says which one it was.
        rates = {"matmul": peak["matmul"]["tflops"], "conv3x3": peak["conv3x3_tflops"]}
        assert min(rates.values()) > 0, dtype
        assert peak["op"] == max(rates, key=rates.get) and peak["tflops"] == rates[peak["op"]], dtype
    assert "Headline" in output and "wrote" in output
    e2e = report["data"]["end_to_end"]  # both epochs' rates are measured, for both sources
    for side in ("hd", "small"):
        for key in ("first_epoch_frames_per_s", "later_epochs_frames_per_s"):
            assert isinstance(e2e[side][key], float) and e2e[side][key] > 0, (side, key)
    assert e2e["first_epoch_ratio"] > 0 and e2e["later_epochs_ratio"] > 0
    numbers = dict(finite_numbers(report))
    assert len(numbers) > 100


def test_ladder_rows_are_consistent(quick_report):
    report, _ = quick_report
    bf16 = report["machine"]["bf16_supported"]
    for key in ("train", "inference"):
        for name, section in report[key]["models"].items():
            rows = section["rungs"]
            names = [r["rung"] for r in rows]
            assert names[:3] == ["naive fp32", "fp32", "+channels_last"], names
            assert ("+bf16" in names) == bf16
            assert "+compile" not in names  # --quick leaves compilation out
            naive = rows[0]["median_s"]
            batch = section["batch"] if key == "train" else section["infer_batch"]
            for r in rows:
                assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["repeats"] == 2
                assert r["speedup_vs_naive"] == pytest.approx(naive / r["median_s"])
                assert r["sequences_per_s"] == pytest.approx(batch / r["median_s"])
                assert r["tflops"] == pytest.approx(section["flops_per_step"] / r["median_s"] / 1e12)
                peak = report["peaks"][r["precision"]]["tflops"]
                assert r["mfu"] == pytest.approx(r["tflops"] / peak)
            best = min(rows[1:], key=lambda r: r["median_s"])
            assert section["best_rung"] == best["rung"], name
            assert section["speedup_vs_naive"] == pytest.approx(naive / best["median_s"])
    train = report["train"]
    assert train["speedup_vs_naive"] == train["models"]["openstl-s"]["speedup_vs_naive"]
    peak = report["peaks"]["bf16" if bf16 else "fp32"]["tflops"]
    assert train["mfu"] == pytest.approx(train["models"]["openstl-s"]["best_tflops"] / peak)
    naive = train["models"]["openstl-s"]["rungs"][0]
    assert train["speedup_ceiling"] == pytest.approx(peak / naive["tflops"])


def test_stream_data_and_accuracy_sections(quick_report):
    report, _ = quick_report
    s = report["stream"]
    short, long = s["lengths"]
    assert s["flatness"] == pytest.approx(s["per_frame_ms"][str(long)] / s["per_frame_ms"][str(short)])
    assert s["path"] == "eager" and set(s["paths"]) == {"eager"}  # --quick compiles nothing
    stacked = s["models"]["openstl-s"]
    assert stacked["lengths"] == [short] and "flatness" not in stacked
    for model in (s, stacked):
        assert set(model["windows"]) == {"10", "20"}
        for r in model["windows"].values():
            assert r["speedup_vs_window"] == pytest.approx(r["per_prediction_ms"] / r["stream_ms"])
        assert set(model["per_frame_ms"]) == {str(n) for n in model["lengths"]}
    enc = s["windows"]["10"]
    assert s["encode_speedup_vs_window"] == pytest.approx(enc["encode_ms"] / enc["encode_stream_ms"])
    d = report["data"]
    assert d["decode_720p"]["frames"] == 8 and d["decode_small"]["frames"] == 40
    assert d["streamer"]["batches_per_s"] > 0
    assert d["streamer_vs_train"] == pytest.approx(d["streamer"]["batches_per_s"] / d["train_steps_per_s"])
    assert d["streamer_cached"]["batches_per_s"] > 0 and d["streamer_by_workers"]["2"] == d["streamer"]["batches_per_s"]
    acc = report["accuracy"]
    if report["machine"]["bf16_supported"]:
        assert acc["bf16"]["state_dtype"] == "float32"  # the cell state stays fp32 under bf16 autocast
        assert acc["val_mse_rel_diff"] == pytest.approx(acc["bf16"]["val_mse"] / acc["fp32"]["val_mse"] - 1)


def test_openstl_size_is_56_8_gmac_per_sequence():
    model = StackedConvLSTM()
    assert model.flops_per_sequence(19, 64, 64) / 2 == pytest.approx(56.78e9, rel=1e-3)


def test_count_flops_matches_the_layer_formula():
    model = StackedConvLSTM(hidden_channels=(8, 6), kernel_size=3, patch=2)
    batch = 2
    x = torch.rand(batch, 3, 1, 8, 8)
    got = count_flops(lambda: model(x, horizon=4), model)
    h = w = 4  # 8×8 frames in 2×2 patches
    cin = [4, 8]
    steps = 3 + 4 - 1  # 3 observed, then 3 fed-back predictions
    recurrent = sum(2 * 9 * (ci + ch) * 4 * ch * h * w for ci, ch in zip(cin, (8, 6))) * steps
    head = 2 * 6 * 4 * h * w * 4  # 1×1 conv to the 4 patch channels, once per prediction
    assert got == batch * (recurrent + head)
    assert model.flops_per_sequence(steps, 8, 8) == recurrent


@pytest.mark.parametrize("k,h,w", [(5, 16, 16), (3, 7, 5), (1, 4, 4)])
def test_valid_tap_fraction_counts_taps_inside_the_image(k, h, w):
    taps = F.conv2d(torch.ones(1, 1, h, w, dtype=torch.float64), torch.ones(1, 1, k, k, dtype=torch.float64),
                    padding=k // 2)
    assert valid_tap_fraction(k, h, w) == pytest.approx(taps.sum().item() / (k * k * h * w))


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as mem:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched
        del x
    assert mem.mb is not None and mem.mb >= 60


def test_stacked_model_equals_its_naive_twin():
    torch.manual_seed(0)
    model = StackedConvLSTM(hidden_channels=(5, 4), kernel_size=3, patch=2).double()
    ref = to_reference(model).double()
    ref.load_state_dict(model.state_dict())
    assert all(type(m) is ReferenceConvLSTM for m in ref.layers)
    x = torch.rand(2, 3, 1, 8, 8, dtype=torch.float64)
    pred = model(x, horizon=3)
    assert pred.shape == (2, 3, 1, 8, 8)
    torch.testing.assert_close(pred, ref(x, horizon=3), atol=1e-9, rtol=0)
    # The predictions are fed back: changing the head changes every later prediction.
    with torch.no_grad():
        model.head.weight.mul_(2)
    assert (model(x, horizon=3)[:, 1:] - pred[:, 1:]).abs().max() > 1e-6


def test_stacked_model_streams_with_a_carried_state():
    # Frame by frame with the states carried gives the one-step prediction of a pass over the whole
    # clip so far (what the stream bench's stateless window recomputes), and leaves the caller's
    # states as they were.
    torch.manual_seed(0)
    model = StackedConvLSTM(hidden_channels=(5, 4), kernel_size=3, patch=2).double()
    x = torch.rand(2, 6, 1, 8, 8, dtype=torch.float64)
    states = None
    for t in range(6):
        before = list(states) if states is not None else None
        pred, new = model.observe(x[:, t : t + 1], states)
        torch.testing.assert_close(pred, model(x[:, : t + 1], horizon=1)[:, 0], atol=1e-12, rtol=0)
        if before is not None:
            assert all(a is b for a, b in zip(states, before)) and new is not states
        states = new


def test_bench_rejects_bad_options():
    result = CliRunner().invoke(app, ["bench", "--threads", "0"])
    assert result.exit_code == 2 and "error: --threads 0" in result.output
    if not torch.cuda.is_available():
        result = CliRunner().invoke(app, ["bench", "--device", "cuda"])
        assert result.exit_code == 2 and "no CUDA device" in result.output


def test_fp32_rungs_run_in_ieee_float32():
    # PyTorch lets cuDNN use TF32 by default; an "fp32" reference must not (nor leak the change).
    from convlstm_cli.bench.setups import fp32_math

    before = torch.backends.cudnn.allow_tf32
    with fp32_math("fp32"):
        assert torch.backends.cudnn.allow_tf32 is False
    with pytest.raises(RuntimeError), fp32_math("bf16"):
        assert torch.backends.cudnn.allow_tf32 is True
        raise RuntimeError("a failing rung")
    assert torch.backends.cudnn.allow_tf32 == before


def test_stream_bench_compiled_path_matches_eager():
    # The compiled path predicts what the eager one does, and the headline is the faster path's
    # figures; both sides of every ratio come from one path.
    from convlstm_cli.bench.cases import ModelCase
    from convlstm_cli.bench.stream import runner, stream_bench
    from convlstm_cli.model.forecaster import EncoderForecaster

    def build():
        return EncoderForecaster(hidden_channels=(4, 8), stem_channels=4, horizon=1)

    torch.manual_seed(0)
    model = build().eval()
    x = torch.rand(1, 3, 1, 16, 16)
    with torch.inference_mode():
        eager, compiled = runner(model, 1, compiled=False), runner(model, 1, compiled=True)
        torch.testing.assert_close(compiled.window(x), eager.window(x), atol=1e-5, rtol=0)
        state = eager.step(x[:, :1], None)
        torch.testing.assert_close(compiled.step(x[:, 1:2], state)[0][1], eager.step(x[:, 1:2], state)[0][1],
                                   atol=1e-5, rtol=0)
    torch._dynamo.reset()
    case = ModelCase("tiny", build, 1, 1, 3, 1, 16)
    report = stream_bench(case, torch.device("cpu"), "fp32", channels_last=False, lengths=(3, 6), windows=(2,),
                          predictions=2, compile=True)
    assert set(report["paths"]) == {"eager", "compiled"} and "error" not in report["paths"]["compiled"]
    best = report["paths"][report["path"]]
    assert report["per_frame_ms"] == best["per_frame_ms"] and report["speedup_vs_window"] == best["speedup_vs_window"]
    assert report["per_frame_ms"]["6"] == min(p["per_frame_ms"]["6"] for p in report["paths"].values())
    assert "encode_per_frame_ms" in report["paths"]["eager"]  # the encoder-only split is measured eagerly


def test_end_to_end_epochs_start_where_the_streamer_starts():
    from convlstm_cli.bench.endtoend import epoch_rates

    # 8 lanes over 4 videos: batches report epochs 1, 3, … (two passes per batch); the first pass is 1.
    r = epoch_rates({1: [9.0, 0.5, 0.5, 0.5], 3: [0.25, 0.25]}, frames_per_step=10)
    assert r["first_epoch_frames_per_s"] == 20.0 and r["later_epochs_frames_per_s"] == 40.0
    assert epoch_rates({0: [1.0]}, 10)["first_epoch_frames_per_s"] is None  # one step: nothing after start-up


def test_end_to_end_alternates_sources_and_pools_their_steps(monkeypatch, tmp_path):
    """HD and small sources take turns (a slow spell of a shared machine lands on both), each round
    with a fresh cache, and the rates come from the pooled steps with each round's start-up left out."""
    from convlstm_cli.bench import endtoend

    calls = []
    monkeypatch.setattr(endtoend, "_sources", lambda tmp, quick: (["hd.mp4"], ["small.mp4"]))

    def fake_times(paths, cache_dir, device, precision, epochs, quick):
        calls.append((paths[0], cache_dir.name))
        slow = 2.0 if len(calls) == 1 else 1.0  # a slow spell during the first run only
        step = 0.2 if paths[0] == "hd.mp4" else 0.1
        return {"times": {0: [99.0] + [step * slow] * 4, 1: [0.05 * slow] * 3}, "frames_per_step": 10, "cache": True}

    monkeypatch.setattr(endtoend, "train_times", fake_times)
    out = endtoend.end_to_end_bench(False, torch.device("cpu"), "fp32")
    assert calls == [("hd.mp4", "cache-hd-0"), ("small.mp4", "cache-small-0"),
                     ("hd.mp4", "cache-hd-1"), ("small.mp4", "cache-small-1")]
    assert out["hd"]["steps"] == {"0": 8, "1": 6}  # two rounds pooled, the 99 s start-ups left out
    assert out["small"]["first_epoch_frames_per_s"] == pytest.approx(100.0)
    assert out["later_epochs_ratio"] == pytest.approx(10 / 0.075 / 200)  # hd median of 0.1 and 0.05 steps
