"""Accuracy guard for bf16: the same short training run in fp32 and in bf16, compared on held-out clips.

Both runs start from the same weights and see the same batches (bouncing shapes rendered in memory,
so no disk or decoding is involved); only the autocast precision differs. The recurrent cell state
stays float32 under bf16 (the gate pre-activations are cast up before the nonlinearities), which the
section checks on the returned state. Validation runs each model in the precision it trained in,
as `convlstm predict` would, and reports the copy-last-frame baseline beside both.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from convlstm_cli.bench.cases import ModelCase
from convlstm_cli.bench.setups import fp32_math
from convlstm_cli.device import autocast


def _clips(count: int, frames: int, size: int, seed: int) -> torch.Tensor:
    from convlstm_cli.data.synthetic import shapes_frames

    rng = np.random.default_rng(seed)
    clips = np.stack([shapes_frames(rng, frames, size, 1) for _ in range(count)])  # [N, T, H, W, 1]
    return torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float().div_(255.0)


def _train_and_eval(case: ModelCase, precision: str, device, train_x, val_x, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = case.build().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    order = torch.Generator().manual_seed(1)
    c = case.context
    t0 = time.perf_counter()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, train_x.shape[0], (batch,), generator=order)
        clip = train_x[idx].to(device)
        with autocast(device, precision):
            pred, state = model(clip[:, :c])
        loss = F.mse_loss(pred.float(), clip[:, c:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        val = val_x.to(device)
        pred, state = model(val[:, :c])
        mse = F.mse_loss(pred.float(), val[:, c:]).item()
    return {"val_mse": mse, "final_train_loss": float(np.mean(losses[-5:])), "train_s": seconds,
            "state_dtype": str(state[0][1].dtype).replace("torch.", "")}


def accuracy_bench(case: ModelCase, device: torch.device, steps: int, bf16: bool) -> dict:
    """Validation MSE after `steps` training steps in fp32 and in bf16 (same start, same batches).

    Returns:
        The ``accuracy`` section: per-precision results, the relative difference of the bf16 val
        MSE from the fp32 one, and the copy-last-frame baseline MSE.
    """
    if not bf16:
        return {"skipped": "bf16 is not supported on this device"}
    frames = case.context + case.horizon
    train_x = _clips(64, frames, case.size, seed=0)
    val_x = _clips(16, frames, case.size, seed=1)
    c = case.context
    baseline = F.mse_loss(val_x[:, c - 1 : c].expand(-1, case.horizon, -1, -1, -1), val_x[:, c:]).item()
    runs = {}
    for p in ("fp32", "bf16"):
        with fp32_math(p):
            runs[p] = _train_and_eval(case, p, device, train_x, val_x, steps, case.batch)
    return {
        "steps": steps,
        "batch": case.batch,
        "data": f"bouncing shapes {case.size}x{case.size}, 64 train / 16 val clips of {frames} frames",
        "fp32": runs["fp32"],
        "bf16": runs["bf16"],
        "baseline_mse": baseline,
        "val_mse_rel_diff": runs["bf16"]["val_mse"] / runs["fp32"]["val_mse"] - 1,
    }
