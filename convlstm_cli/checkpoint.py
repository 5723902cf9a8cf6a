"""Checkpoints: atomic writes, safe loads, and finding the right file in a run directory.

A checkpoint is the union of the `state_dict()`s of every stateful part (model, optimizer, scheduler,
streamer, stream state, RNG) plus the resolved config and counters, stored as tensors and plain
values only, so `torch.load(weights_only=True)` reads it and nothing is unpickled. A file without our
format marker — or one that needs pickled objects — is refused with a `CheckpointError`.

Writes go to a temporary file in the same directory, are fsynced, then `os.replace`d over the
target: a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convlstm_cli.atomic import Staged
from convlstm_cli.errors import CheckpointError

FORMAT = "convlstm-cli/checkpoint/v1"


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically and durably write `payload` (plus the format marker) to `path`."""
    with Staged(path, durable=True) as staged:
        torch.save({"format": FORMAT, **payload}, staged.tmp)
    return staged.path


def copy(src: str | Path, dst: str | Path) -> Path:
    """Atomically copy a checkpoint file (for `best` and the keep-last-N step files)."""
    with Staged(dst, durable=True) as staged:
        shutil.copyfile(src, staged.tmp)
    return staged.path


def find(path: str | Path) -> Path:
    """The checkpoint file for a path: a file as is; a run directory's best.pt, else last.pt."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for cand in (p / "checkpoints" / "best.pt", p / "checkpoints" / "last.pt", p / "best.pt", p / "last.pt"):
            if cand.is_file():
                return cand
        raise CheckpointError(f"{p}: no checkpoints/best.pt or checkpoints/last.pt in this directory")
    raise CheckpointError(f"{p}: no such checkpoint file or run directory")


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True); CheckpointError if it is not one of ours."""
    p = find(path)
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive; anything else is not ours
        raise CheckpointError(f"{p}: not a convlstm-cli checkpoint (not a PyTorch checkpoint file)")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for foreign or pickled content
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else e.__class__.__name__
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            reason = "it holds pickled Python objects, which are refused (only tensors and plain values load)"
        raise CheckpointError(f"{p}: not a convlstm-cli checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a convlstm-cli checkpoint (no '{FORMAT}' marker)")
    for key in ("model", "config"):
        if key not in payload:
            raise CheckpointError(f"{p}: checkpoint has no '{key}' entry")
    from convlstm_cli.config import upgrade

    payload["config"] = upgrade(payload["config"])  # an older checkpoint keeps its behaviour
    return payload


@dataclass
class ResumePoint:
    """Where a resumed run continues: its directory and its last checkpoint's contents."""

    run_dir: Path
    path: Path
    payload: dict[str, Any]


def resume_point(path: str | Path) -> ResumePoint:
    """The last checkpoint of a run directory (or a given checkpoint file), loaded once."""
    p = Path(path)
    ck = p / "checkpoints" / "last.pt" if p.is_dir() else p
    if not ck.is_file():
        raise CheckpointError(f"{p}: nothing to resume (no checkpoints/last.pt)")
    run_dir = ck.parent.parent if ck.parent.name == "checkpoints" else ck.parent
    return ResumePoint(run_dir, ck, load(ck))


@dataclass
class LoadedModel:
    """A model restored for inference, with the run config it was trained with."""

    model: torch.nn.Module
    config: Any  # convlstm_cli.config.RunConfig
    path: Path
    step: int


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the EncoderForecaster of a checkpoint (or run directory) in eval mode on `device`."""
    from convlstm_cli.config import from_dict
    from convlstm_cli.errors import ConfigError
    from convlstm_cli.model.forecaster import EncoderForecaster

    p = find(path)
    payload = load(p)
    try:
        cfg = from_dict(payload["config"])
    except ConfigError as e:
        raise CheckpointError(f"{p}: its config is invalid ({e})") from None
    model = EncoderForecaster.from_config(cfg.model)
    try:
        # A run that kept an average of its weights predicts with the average (what it validated).
        weights = payload["ema"]["model"] if isinstance(payload.get("ema"), dict) else payload["model"]
        model.load_state_dict(weights)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{p}: model weights do not match its config ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    from convlstm_cli.data import sources

    sources.configure(cfg.data.layout, cfg.data.range)  # arrays are read as the model was trained on them
    if cfg.train.channels_last:  # run in the layout it trained in (train.channels_last, resolved at its start)
        model.to(memory_format=torch.channels_last)
    return LoadedModel(model, cfg, p, int(payload.get("step", 0)))
