"""`convlstm demo`: sample videos → a short training run → a prediction on a held-out clip.

Everything is generated locally (moving shapes) and nothing is downloaded. The final table puts the
model beside the copy-last-frame baseline on a clip the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from convlstm_cli.config import RunConfig, load_config


@dataclass
class DemoResult:
    run_dir: Path
    prediction_dir: Path
    model_psnr: float
    baseline_psnr: float


def next_free(base: Path, stem: str) -> Path:
    """base/stem-1, base/stem-2, …: the first that does not exist (earlier demos are kept)."""
    n = 1
    while (base / f"{stem}-{n}").exists():
        n += 1
    return base / f"{stem}-{n}"


def run_demo(out: str | Path = "demo", cfg: RunConfig | None = None, num_videos: int = 24,
             frames: int = 80, seed: int = 0, console: Console | None = None) -> DemoResult:
    """Generate data into out/videos, train into out/run-N, predict a held-out clip into out/prediction-N.

    Args:
        out: demo directory (created; existing runs in it are kept).
        cfg: run config (default: the quickstart sample config).
        num_videos, frames, seed: the generated training set.
    """
    from convlstm_cli.data.synthetic import make_dataset
    from convlstm_cli.predict import predict_clip
    from convlstm_cli.train import train

    console = console or Console()
    out = Path(out)
    cfg = cfg or load_config("quickstart")
    size = cfg.data.hw()[0]
    videos = out / "videos"
    if not any(videos.glob("*.mp4")):
        make_dataset(videos, num=num_videos, frames=frames, size=size, seed=seed, channels=cfg.data.channels)
        console.print(f"wrote {num_videos} sample videos to {videos}")
    held_out = make_dataset(out / "held_out", num=1, frames=frames * 2, size=size, seed=seed + 10_000,
                            channels=cfg.data.channels, overwrite=True)[0]
    run_dir = next_free(out, "run")
    result = train(videos, cfg, out=run_dir, console=console)
    pred_dir = next_free(out, "prediction")
    window = cfg.data.context
    pred = predict_clip(held_out, run_dir, pred_dir, device=cfg.train.device, stateless_window=window)
    m, b = pred.model.means(), pred.baseline.means()
    table = Table(title=f"held-out clip {held_out.name}: one-step-ahead prediction, {len(pred.model)} frames")
    table.add_column("", style="bold")
    for name in ("PSNR dB ↑", "SSIM ↑", "MSE ↓"):
        table.add_column(name, justify="right")
    table.add_row("model", f"{m['psnr']:.2f}", f"{m['ssim']:.4f}", f"{m['mse']:.6f}")
    table.add_row("copy last frame", f"{b['psnr']:.2f}", f"{b['ssim']:.4f}", f"{b['mse']:.6f}")
    console.print(table)
    verdict = "beats" if m["psnr"] > b["psnr"] else "does NOT beat"
    console.print(f"the model {verdict} the copy-last baseline by {m['psnr'] - b['psnr']:+.2f} dB PSNR")
    w = pred.window.means()["psnr"]
    console.print(f"streamed with its state: {m['psnr']:.2f} dB; the same model as a stateless window of {window} "
                  f"frames: {w:.2f} dB ({m['psnr'] - w:+.2f} dB for carrying the state)")
    console.print(f"run: {result.run_dir}   prediction: {pred_dir / 'prediction.gif'}")
    return DemoResult(result.run_dir, pred_dir, m["psnr"], b["psnr"])
