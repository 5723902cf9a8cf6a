"""Device choice and mixed precision: one place that decides cpu/cuda, bf16 and autocast."""

from __future__ import annotations

import contextlib
import functools

import torch

from convlstm_cli.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → cuda if available else cpu; 'cuda' without a GPU is an InputError."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available (use --device cpu or auto)")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device(name)


@functools.cache
def _cpu_bf16() -> bool:
    # oneDNN's own check is the authority where it exists; /proc/cpuinfo flags otherwise.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bf16 autocast runs natively (fast) on this device."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_bf16()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' → 'bf16' where supported, else 'fp32'; 'bf16' where unsupported falls back to fp32."""
    precision = precision.lower()
    if precision not in ("auto", "bf16", "fp32"):
        raise InputError(f"precision {precision!r}: expected auto, bf16 or fp32")
    if precision == "fp32":
        return "fp32"
    return "bf16" if bf16_supported(device) else "fp32"


def resolve_compile(compile: bool | str, device: torch.device) -> bool:
    """train.compile: 'auto' → torch.compile on a GPU only; true/false as given.

    On a GPU an eager step is launch-bound and compiling halves it (`convlstm bench`, H100); on a CPU
    it saves 8-17 % of a step for 1-3 min of compilation, which only long runs pay back.
    """
    if compile == "auto":
        return device.type == "cuda"
    return bool(compile)


def autocast(device: torch.device, precision: str):
    """A bf16 autocast context for precision 'bf16', a no-op context for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_unit(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 frames (pinned on the host) → float32 in [0, 1] on `device`, copied without blocking."""
    return frames.to(device, non_blocking=True).float().div_(255.0)
