"""Recipe 3 — a generic stateful wrapper over lanes of sequences of different lengths.

The recipe's ``StatefulWrapper`` could only reset the whole batch and broke when the batch size
changed. With only the import changed: ``reset(mask)`` restarts just the lanes whose sequence ended
(the others continue), and a short last batch is handled by the documented policy.
"""

import torch
from torch import nn

from convlstm_cli import Stateful  # the recipe: from utils import StatefulWrapper

torch.manual_seed(0)
lengths = [30, 50, 20, 40, 60, 10, 35]  # sequences of different lengths, streamed in 3 lanes
sequences = [torch.randn(n, 4) for n in lengths]
model = Stateful(nn.GRU(4, 8, batch_first=True), on_batch_change="reset")
queue, lanes, pos = list(range(len(sequences))), [None, None, None], [0, 0, 0]
chunk, calls, resets = 10, 0, 0
with torch.no_grad():
    while queue or any(lane is not None for lane in lanes):
        ended = torch.zeros(len(lanes), dtype=torch.bool)
        for b in range(len(lanes)):
            if lanes[b] is None or pos[b] >= lengths[lanes[b]]:  # this lane's sequence is over
                lanes[b] = queue.pop(0) if queue else None
                pos[b], ended[b] = 0, True
        active = [b for b in range(len(lanes)) if lanes[b] is not None]
        if len(active) < len(lanes):  # the last sequences: fewer lanes (the batch size changes)
            lanes = [lanes[b] for b in active]
            pos = [pos[b] for b in active]
            ended = ended[active]
            if not active:
                break
        elif ended.any():
            model.reset(ended)  # only the lanes that start a new sequence; the others continue
            resets += int(ended.sum())
        x = torch.stack([nn.functional.pad(sequences[s][p : p + chunk], (0, 0, 0, max(0, p + chunk - lengths[s])))
                         for s, p in zip(lanes, pos)])
        out = model(x)
        pos = [p + chunk for p in pos]
        calls += 1
print(f"{calls} calls, {resets} lane resets, last output {tuple(out.shape)}")
