"""Where a training step of the openstl-s model spends its time on a GPU (torch.profiler).

    python scripts/profile_cuda.py [RUNG ...]   # rung names of `convlstm bench`, default "+bf16" "+cuda graphs"

Prints, per rung, the step's wall time, the GPU kernel time inside it (busy fraction: low means
launch-bound) and the ten most expensive kernels. Needs a CUDA device.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from convlstm_cli.bench.cases import ladder, openstl_case
from convlstm_cli.bench.setups import train_setup


def main(names: list[str]) -> None:
    device = torch.device("cuda")
    case = openstl_case(device, quick=False)
    rungs = {r.name: r for r in ladder(device, bf16=True, compile=True)}
    for name in names:
        step = train_setup(case, rungs[name], device)()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            for _ in range(5):
                step()
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / 5
        events = prof.key_averages()
        gpu = sum(e.self_device_time_total for e in events) / 5 / 1e6
        print(f"\n== {name}: {wall * 1e3:.1f} ms/step wall, {gpu * 1e3:.1f} ms GPU kernels "
              f"(busy {gpu / wall:.0%})")
        print(events.table(sort_by="self_device_time_total", row_limit=10, max_name_column_width=70))


if __name__ == "__main__":
    main(sys.argv[1:] or ["+bf16", "+cuda graphs"])
