"""`convlstm bench`: speed, memory and stateful-vs-stateless figures of this machine, in one run.

Sections of the report (all in one JSON document, see `run_bench`):
- ``machine``, ``peaks``: facts, and the fp32/bf16 dense peaks (matmul or convolution, the faster)
  measured in the same run;
- ``train``, ``inference``: the ladder of execution paths (`cases.ladder`) for the default model and
  an OpenSTL ConvLSTM-S sized one: time per step, frames/s, FLOP/s, MFU, peak memory, speed-up over
  the naive fp32 reference;
- ``stream``: carried-state streaming against stateless sliding windows (`stream`): the default
  model's fastest path at the top, every path under ``stream.paths``, the stacked model under
  ``stream.models``;
- ``data``: decode + resize and streamer rates against the training consumption (`datapath`);
- ``accuracy``: validation loss of a short fp32 and bf16 training run (`accuracy`).

Headline keys: ``train.speedup_vs_naive`` and ``train.mfu`` (OpenSTL-S model, fastest
rung; MFU against the bf16 peak where bf16 is supported), ``stream.flatness``, ``stream.window``,
``stream.speedup_vs_window``. ``train.speedup_ceiling`` is the speed-up a step would have if it ran
at that peak: the naive reference's FLOP rate sets how much room there is.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable

import torch

from convlstm_cli.bench.cases import ModelCase, Rung, default_case, ladder, openstl_case
from convlstm_cli.bench.flops import count_flops, valid_tap_fraction
from convlstm_cli.bench.machine import machine_facts, peaks
from convlstm_cli.bench.setups import fp32_math, infer_setup, train_setup
from convlstm_cli.bench.timing import measure
from convlstm_cli.device import bf16_supported, resolve_device

__all__ = ["run_bench"]

Log = Callable[[str], None]


def _forward_flops(case: ModelCase) -> int:
    """Forward FLOPs of one sequence (counted at batch 1 on the CPU; FLOPs scale with batch)."""
    model = case.build()
    x, _ = case.data(torch.device("cpu"), 1)
    return count_flops(lambda: case.forward(model, x, case.initial_state(model, x)), model)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _run_rung(case, rung: Rung, device, train: bool, warmup: int, repeats: int) -> tuple[dict, float | None]:
    setup = train_setup(case, rung, device) if train else infer_setup(case, rung, device)
    extra = 1 if (rung.compile or rung.graphs) else 0  # a compiled model may recompile once (strides)
    try:
        with fp32_math(rung.precision):
            timing = measure(setup, device, warmup + extra, repeats)
    except Exception as e:  # noqa: BLE001 - compile and graphs are reported "where they work"
        if not (rung.compile or rung.graphs):
            raise
        if rung.graphs and rung.compile:  # capture the eager model instead of the compiled one
            _free(device)
            row, t = _run_rung(case, dataclasses.replace(rung, compile=False), device, train, warmup, repeats)
            row.setdefault("note", f"compiled capture failed ({type(e).__name__}); captured eager")
            row["rung"] = rung.name
            return row, t
        return {**rung.describe(), "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}, None
    finally:
        if rung.compile:
            torch._dynamo.reset()
        _free(device)
    return {**rung.describe(), **timing.to_dict()}, timing.median


def run_ladder(case: ModelCase, rungs: list[Rung], device, peak: dict, train: bool,
               warmup: int, repeats: int, log: Log) -> dict:
    """Time every rung for one model, training or inference; the per-model report."""
    batch = case.batch if train else case.infer_batch
    flops = _forward_flops(case) * batch * (3 if train else 1)
    rows, naive_t = [], None
    for rung in rungs:
        log(f"{'train' if train else 'infer'} {case.name}: {rung.name}")
        row, t = _run_rung(case, rung, device, train, warmup, repeats)
        if t is not None:
            naive_t = naive_t or (t if rung.naive else None)
            peak_tflops = peak.get(rung.precision, peak["fp32"])["tflops"]
            row.update(
                sequences_per_s=batch / t,
                frames_per_s=batch * case.frames_per_sequence / t,
                tflops=flops / t / 1e12,
                mfu=flops / t / 1e12 / peak_tflops,
                speedup_vs_naive=naive_t / t if naive_t else None,
            )
        rows.append(row)
    timed = [r for r in rows if "median_s" in r and not r["naive"]]
    best = min(timed, key=lambda r: r["median_s"]) if timed else None
    return {
        "model": case.name,
        **case.settings(),
        "flops_per_step": flops,
        "rungs": rows,
        "best_rung": best["rung"] if best else None,
        "speedup_vs_naive": best["speedup_vs_naive"] if best else None,
        "best_tflops": best["tflops"] if best else None,
    }


def run_bench(device: str = "auto", quick: bool = False, threads: int | None = None, compile: bool = True,
              log: Log | None = None) -> dict:
    """Run every section and return the report (plain JSON values).

    Args:
        device: "auto", "cpu" or "cuda".
        quick: tiny models and few repeats (a smoke run of every section, no compile rung).
        threads: CPU threads for torch (default: what torch chose, normally one per core).
        compile: include the torch.compile rung.
        log: called with a short line as each case starts (progress).
    """
    log = log or (lambda _msg: None)
    dev = resolve_device(device)
    # A CUDA build of torch compiling for the CPU warns that it found no CUDA runtime: not our concern.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if threads:
        torch.set_num_threads(threads)
    bf16 = bf16_supported(dev)
    warmup, repeats = (1, 2) if quick else (1, 3)
    compile = compile and not quick
    cases = {c.name: c for c in (openstl_case(dev, quick), default_case(dev, quick))}
    report: dict = {
        "settings": {"device": dev.type, "quick": quick, "threads": torch.get_num_threads(), "warmup": warmup,
                     "repeats": repeats, "compile": compile, "statistic": "median",
                     "fp32_math": "ieee (cuDNN TF32 off)" if dev.type == "cuda" else "ieee",
                     "models": {name: c.settings() for name, c in cases.items()}},
        "machine": machine_facts(dev),
    }
    log("dense peaks (matmul, convolution)")
    report["peaks"] = peaks(dev, quick)
    prec = "bf16" if bf16 else "fp32"  # the precision of the fastest paths, and of the MFU yardstick
    rungs = ladder(dev, bf16, compile)
    cudnn_benchmark = torch.backends.cudnn.benchmark
    try:
        train = {n: run_ladder(c, rungs, dev, report["peaks"], True, warmup, repeats, log) for n, c in cases.items()}
        infer = {n: run_ladder(c, rungs, dev, report["peaks"], False, warmup, repeats, log) for n, c in cases.items()}
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    report["train"] = train_section(train, cases[HEADLINE], report["peaks"][prec]["tflops"], prec)
    report["inference"] = inference_section(infer)
    log("stream vs sliding window")
    report["stream"] = stream_section(cases, dev, prec, quick, compile)
    default = cases["default"]
    best = train["default"]["best_tflops"]
    steps_per_s = best * 1e12 / train["default"]["flops_per_step"] if best else None
    report.update(other_sections(quick, dev, prec, default, steps_per_s, bf16, log))
    return report


def other_sections(quick: bool, dev: torch.device, prec: str, default: ModelCase, steps_per_s, bf16: bool,
                   log: Log) -> dict:
    """The data path (streamer alone and end to end), the export latency and the bf16 accuracy guard."""
    from convlstm_cli.bench.accuracy import accuracy_bench
    from convlstm_cli.bench.datapath import data_bench
    from convlstm_cli.bench.endtoend import end_to_end_bench
    from convlstm_cli.bench.exported import export_bench

    log("data path")
    data = data_bench(quick, default.batch, default.context, default.horizon, default.size, steps_per_s)
    log("data path end to end: training from HD sources and from shrunk ones")
    data["end_to_end"] = end_to_end_bench(quick, dev, prec)
    log("exported model: onnxruntime against PyTorch eager")
    exported = export_bench(quick) if dev.type == "cpu" else {"skipped": "measured on the CPU"}
    log("accuracy guard: fp32 vs bf16 training")
    accuracy = accuracy_bench(default, dev, steps=2 if quick else 60, bf16=bf16)
    return {"data": data, "export": exported, "accuracy": accuracy}


HEADLINE = "openstl-s"  # the model of the headline training and inference figures


def train_section(train: dict, case: ModelCase, head_peak: float, prec: str) -> dict:
    """The ``train`` section: the headline model's speed-up, MFU and ceiling, every model's ladder."""
    main = train[HEADLINE]
    naive_tflops = next((r.get("tflops") for r in main["rungs"] if r["naive"]), None)
    stack = case.build()
    side = case.size // stack.patch
    return {
        "model": HEADLINE,
        "speedup_vs_naive": main["speedup_vs_naive"],
        "mfu": main["best_tflops"] / head_peak if main["best_tflops"] else None,
        "mfu_peak": prec,
        "speedup_ceiling": head_peak / naive_tflops if naive_tflops else None,
        "best_rung": main["best_rung"],
        "valid_tap_fraction": valid_tap_fraction(stack.kernel_size, side, side),
        "models": train,
    }


def inference_section(infer: dict) -> dict:
    """The ``inference`` section: the headline model's best sequences/s, every model's ladder."""
    return {
        "model": HEADLINE,
        "sequences_per_s": max((r.get("sequences_per_s") or 0) for r in infer[HEADLINE]["rungs"]),
        "speedup_vs_naive": infer[HEADLINE]["speedup_vs_naive"],
        "models": infer,
    }


def stream_section(cases: dict, dev: torch.device, prec: str, quick: bool, compile: bool) -> dict:
    """The ``stream`` section: the default model (eager and compiled, short and long clip) at the top,
    the stacked model beside it under ``models``."""
    from convlstm_cli.bench.stream import stream_bench

    short, long = (10, 100) if quick else (100, 1000)
    predictions = 3 if quick else 30
    out = stream_bench(cases["default"], dev, prec, channels_last=True, lengths=(short, long),
                       windows=(10, 20), predictions=predictions, compile=compile)
    # The stacked model streams next to it, where a prediction costs a 1×1 head: eager, short clip
    # only (a frame costs ~5× the default model's; flatness is the default model's figure).
    out["models"] = {HEADLINE: stream_bench(cases[HEADLINE], dev, prec, channels_last=True, lengths=(short,),
                                            windows=(10, 20), predictions=max(3, predictions // 3))}
    return out
