"""Facts about the machine a benchmark ran on, and its measured dense peaks (the MFU yardstick).

The peak is measured, not looked up: the best rate of large dense products in fp32 and bf16 in the
same run, so MFU compares the model with what this machine, this build of torch and these threads
actually deliver today (clock, libraries and contention from other processes included).

Two kinds of dense product are timed and the faster one is the peak: square matmuls and a large 3×3
convolution (an implicit GEMM). They go through different libraries: on the CPU, fp32 matmuls run in
MKL, whose code path on AMD processors reaches ~0.6 of what oneDNN's fp32 convolutions do, so a
matmul-only peak let a plain fp32 model score an MFU above 1. The model is made of convolutions; the
yardstick must be at least as fast as them.
"""

from __future__ import annotations

import os
import platform

import torch
import torch.nn.functional as F

from convlstm_cli.bench.setups import fp32_math
from convlstm_cli.bench.timing import time_calls
from convlstm_cli.device import bf16_supported, cpu_isa


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
        "isa": cpu_isa(),
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


def conv_peak(device: torch.device, dtype: torch.dtype, batch: int, repeats: int = 3) -> float:
    """TFLOP/s of a 256 → 512 channel 3×3 'same' convolution on batch × 32×32, channels_last.

    2·9·256·512·32·32 FLOPs per image; the layout and shape of a ConvLSTM gate convolution, large
    enough for the convolution library's best kernels.
    """
    x = torch.randn(batch, 256, 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(512, 256, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    times = time_calls(lambda: F.conv2d(x, w, padding=1), device, warmup=1, repeats=repeats)
    return 2 * 9 * 256 * 512 * 32 * 32 * batch / min(times) / 1e12


def dense_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...], conv_batch: int) -> dict:
    """The better of the matmul and the convolution peak, with both recorded.

    Returns:
        {"tflops": the peak, "op": "matmul" or "conv3x3", "matmul": `matmul_peak`'s dict,
        "conv3x3_tflops": the convolution's rate}.
    """
    # IEEE float32 for fp32 (cuDNN would use TF32 by default), as the fp32 rungs run.
    with fp32_math("fp32" if dtype == torch.float32 else "bf16"):
        mm = matmul_peak(device, dtype, sizes)
        conv = conv_peak(device, dtype, conv_batch)
    best = ("conv3x3", conv) if conv > mm["tflops"] else ("matmul", mm["tflops"])
    return {"tflops": best[1], "op": best[0], "matmul": mm, "conv3x3_tflops": conv}


def peaks(device: torch.device, quick: bool) -> dict:
    """fp32 and (where supported) bf16 dense peaks; sizes take ~0.05-0.3 s per call on a 2-core CPU."""
    if device.type == "cuda":
        sizes, conv_batch = ((4096,), 16) if quick else ((8192, 12288), 128)
    else:
        sizes, conv_batch = ((1024,), 1) if quick else ((2048, 3072), 8)
    out = {"fp32": dense_peak(device, torch.float32, sizes, conv_batch)}
    if bf16_supported(device):
        out["bf16"] = dense_peak(device, torch.bfloat16, sizes, conv_batch)
    return out
