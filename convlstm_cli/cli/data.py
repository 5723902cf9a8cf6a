"""`convlstm make-data` (write the built-in sample videos) and `convlstm probe` (check a video folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convlstm_cli.cli.common import fail, known_errors


def make_data(
    out_dir: Annotated[Path, typer.Argument(readable=False, help="Directory to write the videos into (created if missing).")],
    scene: Annotated[str, typer.Option("--scene", help="shapes (bouncing shapes), pans (a camera moving over real "
                                       "photographs: real-like footage, needs scikit-image), occlusion (balls hidden "
                                       "for --hidden frames: a memory task, with ground truth), reveal (a bar "
                                       "sweeps over a still scene: what it uncovers was hidden longer than a "
                                       "chunk; memory ground truth too).")] = "shapes",
    num: Annotated[int, typer.Option("--num", help="Number of videos.")] = 8,
    frames: Annotated[int | None, typer.Option("--frames", help="Frames per video (default: 64; pans: 150-300).")] = None,
    size: Annotated[int, typer.Option("--size", help="Frame height and width in pixels (shapes, occlusion, reveal).")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed writes the same videos.")] = 0,
    channels: Annotated[int, typer.Option("--channels", help="1 = gray, 3 = colour (shapes).")] = 1,
    held_out: Annotated[bool, typer.Option("--held-out", help="pans: use the photographs kept for final "
                                           "figures (never for choosing anything).")] = False,
    hidden: Annotated[int | None, typer.Option("--hidden", help="occlusion: frames a ball stays hidden (longer "
                                               "than a chunk; default 20); reveal: a column stays covered 0.4-1.2 "
                                               "times this (default 16).")] = None,
    margin: Annotated[int, typer.Option("--margin", help="occlusion: pixels balls may travel outside the frame.")] = 0,
    window: Annotated[int, typer.Option("--window", help="occlusion, reveal: the window the memory ground truth is for.")] = 8,
    noise: Annotated[float, typer.Option("--noise", help="occlusion, reveal: camera noise in grey levels (0: clean frames).")] = 2.0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite videos of the same names already there.")] = False,
) -> None:
    """Write sample videos (deterministic, nothing is downloaded)."""
    from convlstm_cli.data.occlusion import make_occlusion
    from convlstm_cli.data.pans import make_pans
    from convlstm_cli.data.reveal import make_reveal
    from convlstm_cli.data.synthetic import make_dataset

    if channels not in (1, 3):
        raise fail(f"--channels {channels}: expected 1 or 3")
    makers = {
        "shapes": lambda: make_dataset(out_dir, num=num, frames=frames or 64, size=size, seed=seed,
                                       channels=channels, overwrite=force),
        "pans": lambda: make_pans(out_dir, num=num, frames=frames, seed=seed, held_out=held_out, overwrite=force),
        "occlusion": lambda: make_occlusion(out_dir, num=num, frames=frames or 120, size=size, seed=seed,
                                            hidden=20 if hidden is None else hidden, margin=margin,
                                            window=window, noise=noise, overwrite=force),
        "reveal": lambda: make_reveal(out_dir, num=num, frames=frames or 120, size=size, seed=seed,
                                      hidden=16 if hidden is None else hidden, window=window, noise=noise,
                                      overwrite=force),
    }
    if scene not in makers:
        raise fail(f"--scene {scene}: expected one of {', '.join(makers)}")
    with known_errors():
        paths = makers[scene]()
    for path in paths:
        typer.echo(str(path))
    typer.echo(f"wrote {len(paths)} {scene} videos to {out_dir}")


def probe(
    video_dir: Annotated[Path, typer.Argument(readable=False, help="A directory (searched recursively) or one video file.")],
    min_frames: Annotated[int, typer.Option("--min-frames", help="Skip videos with fewer frames.")] = 1,
    layout: Annotated[str, typer.Option(help="Arrays: auto, TNHW, NTHW, NTCHW or NTHWC (data.layout).")] = "auto",
    value_range: Annotated[str | None, typer.Option("--range", help="Arrays of numbers: lo,hi (data.range).")] = None,
) -> None:
    """List the usable videos in a folder (frames, size, fps) and each skipped file with its reason."""
    from convlstm_cli.config import load_config
    from convlstm_cli.data import sources
    from convlstm_cli.data.probe import probe_videos

    with known_errors():
        sets = [f"data.layout={layout}"] + ([f"data.range=[{value_range}]"] if value_range else [])
        d = load_config(None, sets).data  # the same checks as a config's
        sources.configure(d.layout, d.range)
        result = probe_videos(video_dir, min_frames=min_frames)
    for v in result.videos:
        counted = " (counted by decoding)" if v.counted else ""
        rate = f"{v.fps:g} fps" if v.fps > 0 else "no rate"
        typer.echo(f"{v.path}\t{v.frames} frames\t{v.width}x{v.height}\t{rate}\t{v.codec}{counted}")
    typer.echo(result.summary())


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("make-data")(make_data)
    app.command("probe")(probe)
