"""torch.distributed plumbing for `torchrun --nproc_per_node N -m convlstm_cli train …`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; we then join a process group (gloo on CPU, nccl on
CUDA). Every rank streams its own share of the videos in its own lanes; DDP averages gradients;
rank 0 alone writes checkpoints and logs. Without those variables everything is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op when not under torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def shutdown(info: DistInfo, clean: bool = True) -> None:
    """Leave the process group, after every rank has finished its collectives (when `clean`).

    The barrier keeps a rank from tearing its connections down while a peer still talks to it, and
    callers drop every object that holds the group (DDP's reducer) before this, so gloo's worker
    threads are joined here, while the interpreter is alive, and not at its exit: freed during
    interpreter finalization they abort the process ("terminate called without an active
    exception", pytorch/pytorch#179291). `clean=False` (an error on this rank) skips the barrier,
    which the other ranks might never reach.
    """
    if not (info.enabled and dist.is_initialized()):
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def any_true(info: DistInfo, flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any rank (so all ranks stop at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (a list of one without distribution)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(info: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
