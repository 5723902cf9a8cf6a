"""Timing and peak memory of one benchmark case, the same way on CPU and CUDA.

Every case runs warm-up calls first (compilation, allocator growth, oneDNN/cuDNN algorithm choice),
then `repeats` timed calls; the figure reported is the median. On CUDA each call is timed with a pair
of CUDA events and synchronised, so queued kernels are never mistaken for finished work.

Peak memory covers the whole case, set-up included (model, optimizer state, activations): on CUDA
the caching allocator's `max_memory_allocated`; on CPU the growth of the process's resident-set
high-water mark above the resident set at the start (Linux `VmHWM`, reset per case through
`/proc/self/clear_refs`, after handing freed heap back with glibc's `malloc_trim`), which counts every
allocation the case makes, including oneDNN's scratch buffers and the compiler's own memory.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

_MB = 2**20


def synchronize(device: torch.device) -> None:
    """Wait for queued work on `device` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call of the timed repeats, and the case's peak memory."""

    times: list[float]
    peak_mem_mb: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def to_dict(self) -> dict:
        return {
            "median_s": self.median,
            "min_s": min(self.times),
            "max_s": max(self.times),
            "repeats": len(self.times),
            "peak_mem_mb": self.peak_mem_mb,
            **self.extra,
        }


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Run `fn` warmup times untimed, then `repeats` times timed; seconds per call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    return [_time_call(fn, device) for _ in range(repeats)]


def _time_call(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class PeakMemory:
    """Context manager measuring the peak memory of the code inside it, in MiB (`.mb`)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: float | None = None
        self._base = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _trim_heap()
            _reset_hwm()
            self._base = _proc_status_kb("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / _MB
        else:
            peak = _proc_status_kb("VmHWM")
            self.mb = (peak - self._base) / 1024 if peak and self._base else None


def measure(setup: Callable[[], Callable[[], object]], device: torch.device, warmup: int, repeats: int) -> Timing:
    """Build a case with `setup()` (which returns the call to time) and time it, with peak memory.

    The set-up and the warm-up are inside the memory measurement, so the peak includes the model,
    its optimizer state and the compiled code, not only the timed calls.
    """
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        fn = setup()
        t1 = time.perf_counter()
        for _ in range(warmup):
            fn()
        synchronize(device)
        t2 = time.perf_counter()
        times = [_time_call(fn, device) for _ in range(repeats)]
    timing = Timing(times, mem.mb)
    # Set-up and warm-up times: where CUDA-graph capture and torch.compile's compilation show.
    timing.extra.update(setup_s=t1 - t0, warmup_s=t2 - t1)
    return timing


def _trim_heap() -> None:
    # Hand memory freed by earlier cases back to the OS (glibc keeps it otherwise), so that the
    # resident set at the start of a case is what is live and its growth is this case's own.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> None:
    # Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _proc_status_kb(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
