"""Per-frame latency of an exported model in onnxruntime against PyTorch eager, on the CPU.

The default model is exported (`convlstm_cli.export`) at chunk 1 (a live feed: one frame per call)
and chunk 64 (`predict`'s chunk), both run fp32 with the state fed back, batch 1; PyTorch runs the same
`predict_each_step` calls eagerly in fp32. Medians of repeated calls, after a warm-up.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from convlstm_cli.bench.timing import time_calls

CPU = torch.device("cpu")


def _median_ms(fn, calls: int, frames: int) -> float:
    """Median ms per frame of `calls` timed calls of fn (after one untimed), each covering `frames` frames."""
    return statistics.median(time_calls(fn, CPU, warmup=1, repeats=calls)) / frames * 1e3


def _latency(model, path: Path, chunk: int, cfg, calls: int) -> dict:
    """ms per frame of the exported file in onnxruntime and of the model in PyTorch eager (fp32)."""
    from convlstm_cli.export import ExportedRunner

    h, w = cfg.data.hw()
    runner = ExportedRunner(path, "onnx")
    x = np.random.default_rng(0).random((1, chunk, cfg.data.channels, h, w), dtype=np.float32)
    xt, state = torch.from_numpy(x), [None]

    def eager() -> None:
        with torch.inference_mode():
            _, state[0] = model.predict_each_step(xt, state[0], 1)

    ort_ms, torch_ms = _median_ms(lambda: runner(x), calls, chunk), _median_ms(eager, calls, chunk)
    return {"onnxruntime_ms_per_frame": ort_ms, "torch_eager_ms_per_frame": torch_ms, "speedup": torch_ms / ort_ms}


def export_bench(quick: bool) -> dict:
    """The ``export`` section: ms per frame in onnxruntime and PyTorch eager at chunk 1 and 64."""
    from convlstm_cli import checkpoint, config
    from convlstm_cli.export import EXPORT_MODULES, export_model, missing_modules

    if missing_modules():
        return {"skipped": f"the [export] extra ({', '.join(EXPORT_MODULES)}) is not installed"}
    from convlstm_cli.model.forecaster import EncoderForecaster

    sets = ["model.hidden_channels=8,16", "model.stem_channels=8", "data.size=32"] if quick else []
    cfg = config.load_config(None, sets)
    torch.manual_seed(0)
    model = EncoderForecaster.from_config(cfg.model).eval()
    out = {"model": "default" if not quick else "tiny", "precision": "fp32", "batch": 1, "chunks": {}}
    with tempfile.TemporaryDirectory(prefix="convlstm-export-") as tmp:
        run = Path(tmp) / "run"
        checkpoint.save(run / "checkpoints" / "last.pt", {"model": model.state_dict(), "config": config.to_dict(cfg)})
        for chunk in (1, 4) if quick else (1, 64):
            path, t0 = Path(tmp) / f"m{chunk}.onnx", time.perf_counter()
            export_model(run, "onnx", path, chunk=chunk, horizon=1)
            seconds = time.perf_counter() - t0
            out["chunks"][str(chunk)] = {**_latency(model, path, chunk, cfg, 5 if quick else (50 if chunk == 1 else 8)),
                                         "export_s": seconds}
    return out
