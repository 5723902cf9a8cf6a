"""convlstm demo: the whole path (generate → train → predict held-out clip) on a tiny setting."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from convlstm_cli.cli import app


def test_demo_writes_run_prediction_and_table(tmp_path):
    out = tmp_path / "demo"
    sets = ["train.max_steps=6", "train.eval_every=1000", "train.tensorboard=false", "data.size=32",
            "model.hidden_channels=8,16", "model.stem_channels=8", "data.batch_size=2", "data.context=4"]
    args = ["demo", "--out", str(out), "--num", "4", *[a for s in sets for a in ("--set", s)]]
    r = CliRunner().invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert len(list((out / "videos").glob("*.mp4"))) == 4
    assert (out / "run-1" / "checkpoints" / "last.pt").is_file()
    metrics = json.loads((out / "prediction-1" / "metrics.json").read_text())
    assert (out / "prediction-1" / "prediction.gif").stat().st_size > 0
    assert "copy-last baseline" in r.output and "copy last frame" in r.output
    assert metrics["model"]["psnr"] > 0 and metrics["baseline"]["psnr"] > 0
    text = " ".join(r.output.split())
    assert f"as a stateless window of 4 frames: {metrics['window']['psnr']:.2f} dB" in text  # the memory line
    # A second demo into the same folder keeps the first run and reuses the videos.
    r = CliRunner().invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (out / "run-1").is_dir() and (out / "run-2" / "checkpoints" / "last.pt").is_file()
