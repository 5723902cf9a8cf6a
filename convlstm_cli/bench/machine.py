"""Facts about the machine a benchmark ran on, and its measured matmul peaks (the MFU yardstick).

The peak is measured, not looked up: the best rate of large square matmuls in fp32 and bf16 in the
same run, so MFU compares the model with what this machine, this build of torch and these threads
actually deliver today (clock, BLAS library and contention from other processes included).
"""

from __future__ import annotations

import os
import platform

import torch

from convlstm_cli.bench.timing import time_calls
from convlstm_cli.device import bf16_supported


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(device: torch.device) -> dict:
    """torch version, device name, threads, bf16 support and friends, as plain JSON values."""
    facts = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "bf16_supported": bf16_supported(device),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            device_name=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            # fp32 convolutions run in TF32 on Ampere+ unless this is off; fp32 matmuls do not.
            cudnn_tf32=torch.backends.cudnn.allow_tf32,
        )
    else:
        facts["device_name"] = facts["cpu"]
    return facts


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...], repeats: int = 3) -> dict:
    """Best FLOP/s of square matmuls of the given sizes (2·n³ FLOPs each).

    Returns:
        {"tflops": best rate, "size": n of the best, "by_size": {n: tflops}}.
    """
    by_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        times = time_calls(lambda a=a, b=b: torch.mm(a, b), device, warmup=1, repeats=repeats)
        by_size[n] = 2 * n**3 / min(times) / 1e12  # the peak is the best call, not the typical one
        del a, b
    best = max(by_size, key=by_size.get)
    return {"tflops": by_size[best], "size": best, "by_size": {str(k): v for k, v in by_size.items()}}


def peaks(device: torch.device, quick: bool) -> dict:
    """fp32 and (where supported) bf16 matmul peaks; sizes take ~0.05-0.3 s per call on a 2-core CPU."""
    if device.type == "cuda":
        sizes = (4096,) if quick else (8192, 12288)
    else:
        sizes = (1024,) if quick else (2048, 3072)
    out = {"fp32": matmul_peak(device, torch.float32, sizes)}
    if bf16_supported(device):
        out["bf16"] = matmul_peak(device, torch.bfloat16, sizes)
    return out
