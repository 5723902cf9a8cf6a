"""Render a bench report as rich tables, and write it as JSON (atomically)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from convlstm_cli import atomic, jsonsafe


def _num(v, fmt: str = ".2f", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, fmt)


def _flops(tflops: float | None) -> str:
    if tflops is None:
        return "-"
    return f"{tflops:.1f} T" if tflops >= 1 else f"{tflops * 1e3:.0f} G"


def ladder_table(title: str, section: dict, train: bool) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("path", no_wrap=True)
    for col in ("ms/step" if train else "ms/call", "seq/s", "frames/s", "FLOP/s", "MFU", "peak MB", "×naive"):
        t.add_column(col, justify="right")
    for r in section["rungs"]:
        if "error" in r:
            t.add_row(r["rung"], f"[red]failed: {r['error'][:60]}[/red]", *[""] * 6)
            continue
        t.add_row(r["rung"], _num(r["median_s"] * 1e3, ".1f"), _num(r["sequences_per_s"], ".2f"),
                  _num(r["frames_per_s"], ".1f"), _flops(r["tflops"]), _num(r["mfu"], ".2f"),
                  _num(r["peak_mem_mb"], ".0f"), _num(r["speedup_vs_naive"], ".2f") + "×")
    return t


def stream_table(s: dict) -> Table:
    t = Table(title=f"Streaming: carried state against a stateless sliding window (batch 1, {s['precision']}, "
                    f"horizon {s['horizon']}; × = window ÷ streaming)", title_justify="left")
    for col in ("model", "path", "case"):
        t.add_column(col, no_wrap=True)
    for col in ("ms/pred", "pred/s", "streaming ×", "encoder ×"):
        t.add_column(col, justify="right")
    for model in (s, *s.get("models", {}).values()):
        for path, p in model["paths"].items():
            name = model["model"], path + (" *" if path == model["path"] else "")
            if "error" in p:
                t.add_row(*name, f"[red]failed: {p['error'][:60]}[/red]", "", "", "", "")
                continue
            for n, ms in p["per_frame_ms"].items():
                t.add_row(*name, f"carried state, {n} frames", _num(ms), _num(1e3 / ms, ".0f"), "", "")
            for w, r in p["windows"].items():
                enc = r.get("encode_speedup_vs_window")  # measured on the eager encoder-forecaster only
                t.add_row(*name, f"window W={w}", _num(r["per_prediction_ms"]), _num(r["predictions_per_s"], ".0f"),
                          _num(r["speedup_vs_window"]) + "×", "" if enc is None else _num(enc) + "×")
    return t


def data_table(d: dict) -> Table:
    t = Table(title=f"Data path (→ {d['resize_to'][0]}×{d['resize_to'][1]} gray)", title_justify="left")
    t.add_column("stage")
    t.add_column("rate", justify="right")
    for key in ("decode_720p", "decode_small", "read_array"):
        if key in d:
            t.add_row(f"{'read' if key == 'read_array' else 'decode'} + resize, {d[key]['source']}",
                      f"{d[key]['frames_per_s']:.0f} frames/s")
    st = d["streamer"]
    shape = f"batch {st['batch']}, context {st['context']}"
    for w, rate in d.get("streamer_by_workers", {str(st["workers"]): st["batches_per_s"]}).items():
        t.add_row(f"ClipStreamer decoding ({shape}, {w} threads)", f"{rate:.1f} batches/s")
    cached = d.get("streamer_cached")
    if cached:
        t.add_row(f"ClipStreamer from the frame cache ({cached['workers']} threads)",
                  f"{cached['batches_per_s']:.1f} batches/s")
    if d.get("train_steps_per_s"):
        t.add_row("default model training consumes", f"{d['train_steps_per_s']:.1f} batches/s")
        t.add_row(f"streamer ÷ training (decoding, {st['workers']} threads)", f"{d['streamer_vs_train']:.1f}×")
        if cached:
            t.add_row("streamer ÷ training (frame cache)", f"{d['streamer_cached_vs_train']:.1f}×")
    return t


def end_to_end_table(e: dict) -> Table:
    t = Table(title=f"Training end to end (default model): {e['source']} sources against the same frames at "
                    "64×64", title_justify="left")
    for col in ("sources", "first epoch frames/s", "later epochs frames/s", "frame cache"):
        t.add_column(col, justify="left" if col == "sources" else "right")
    for key in ("hd", "small"):
        r = e[key]
        t.add_row(key, _num(r["first_epoch_frames_per_s"], ".0f"), _num(r["later_epochs_frames_per_s"], ".0f"),
                  "on" if r["cache"] else "off")
    t.add_row("HD ÷ small", _num(e["first_epoch_ratio"]), _num(e["later_epochs_ratio"]), "")
    return t


def export_table(x: dict) -> Table | str:
    if "skipped" in x:
        return f"Exported model: skipped ({x['skipped']})"
    t = Table(title=f"Exported model ({x['model']}, {x['precision']}, batch {x['batch']}): ms per frame",
              title_justify="left")
    for col in ("chunk", "onnxruntime", "PyTorch eager", "onnxruntime ×"):
        t.add_column(col, justify="right")
    for chunk, r in x["chunks"].items():
        t.add_row(chunk, _num(r["onnxruntime_ms_per_frame"]), _num(r["torch_eager_ms_per_frame"]), _num(r["speedup"]))
    return t


def render(report: dict, console: Console | None = None) -> None:
    """Print the report's tables and headline figures."""
    console = console or Console()
    m, p = report["machine"], report["peaks"]
    peak = ", ".join(f"{k} {v['tflops'] * 1e3:.0f} GFLOP/s ({v['op']})" for k, v in p.items())
    isa = m.get("isa", {}).get("summary", "?")
    console.print(f"[bold]convlstm bench[/bold] — {m['device_name']} ({m['device']}, {isa}), torch {m['torch']}, "
                  f"{m['threads']} threads, bf16 {'yes' if m['bf16_supported'] else 'no'}; dense peak: {peak}")
    for key, train in (("train", True), ("inference", False)):
        for name, section in report[key]["models"].items():
            b = section["batch"] if train else section["infer_batch"]
            title = (f"{'Training step' if train else 'Inference'} — {name} model, batch {b}, "
                     f"{section['context']}→{section['horizon']} frames at {section['size']}×{section['size']}")
            console.print(ladder_table(title, section, train))
    console.print(stream_table(report["stream"]))
    console.print(data_table(report["data"]))
    if "end_to_end" in report["data"]:
        console.print(end_to_end_table(report["data"]["end_to_end"]))
    if "export" in report:
        console.print(export_table(report["export"]))
    acc = report["accuracy"]
    if "skipped" not in acc:
        console.print(f"Accuracy guard ({acc['steps']} steps): val MSE fp32 {acc['fp32']['val_mse']:.5f}, "
                      f"bf16 {acc['bf16']['val_mse']:.5f} ({acc['val_mse_rel_diff'] * 100:+.1f} %), "
                      f"copy-last baseline {acc['baseline_mse']:.5f}; state dtype under bf16: "
                      f"{acc['bf16']['state_dtype']}")
    tr, s = report["train"], report["stream"]
    console.print(
        f"[bold]Headline[/bold]: openstl-s training {_num(tr['speedup_vs_naive'])}× naive fp32 "
        f"({tr['best_rung']}; at most {_num(tr['speedup_ceiling'])}× at the {tr['mfu_peak']} peak), "
        f"MFU {_num(tr['mfu'])} of the {tr['mfu_peak']} peak; "
        f"stream flatness {_num(s['flatness'])}, {_num(s['speedup_vs_window'])}× faster than a "
        f"W={s['window']} sliding window ({s['model']} model, {s['path']})"
    )


def write_json(report: dict, path: str | Path) -> Path:
    """Write the report to `path` via a temporary file (never half-written)."""
    return atomic.write_text(path, json.dumps(jsonsafe.clean(report), indent=2) + "\n")
