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
    isa = cpu_isa()
    return isa["avx512_bf16"] or isa["amx_bf16"]


def cpu_isa() -> dict:
    """The CPU's matrix and vector extensions that decide bf16 speed, and a one-line summary.

    AMX (Sapphire Rapids and later Xeons) multiplies bf16 tiles in dedicated units: several times the
    fp32 rate. avx512_bf16 without AMX (e.g. AMD Zen 4) does twice the fp32 rate. Without either,
    bf16 is emulated and no faster.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    have = {name: name in flags for name in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")}
    summary = ("AMX-BF16" if have["amx_bf16"] else "AVX512-BF16, no AMX" if have["avx512_bf16"]
               else "AVX-512, no bf16" if have["avx512f"] else "AVX2" if have["avx2"] else "unknown")
    return {**have, "summary": summary}


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


def fallback_note(asked: str, resolved: str, device: torch.device) -> str | None:
    """Why an explicit ``bf16`` runs in fp32 here, in a few words; None when nothing fell back.

    `resolve_precision` falls back silently (a config written for a bf16 machine still runs); the
    run's header and predict's notes say so, since bf16 emulated would be slower than fp32, not faster.
    """
    if asked.lower() != "bf16" or resolved == "bf16":
        return None
    if torch.device(device).type == "cpu":
        return f"bf16 asked, but this CPU ({cpu_isa()['summary']}) has no native bf16"
    return f"bf16 asked, but {torch.device(device)} does not support it"


def fallback_notes(asked: str, resolved: str, device: torch.device) -> list[str]:
    """`fallback_note` as the notes predict and eval report after a run: [] or one line."""
    note = fallback_note(asked, resolved, device)
    return [f"{note}: ran in fp32"] if note else []


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
