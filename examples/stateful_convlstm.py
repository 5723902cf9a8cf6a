"""Recipe 2 — a stateful ConvLSTM predicting the next video frame, chunk after chunk.

The recipe built on ``nn.ConvLSTM2d(input_channels, hidden_channels, kernel_size, num_layers=...,
batch_first=True)``, which PyTorch does not have. With only the import changed it runs: convlstm_cli's
ConvLSTM2d has that signature and nn.LSTM's conventions (output, (h_n, c_n)).
"""

import numpy as np
import torch
from torch import nn

from convlstm_cli import ConvLSTM2d, Stateful  # the recipe: torch.nn.ConvLSTM2d (which does not exist)
from convlstm_cli.data.synthetic import shapes_frames

torch.manual_seed(0)
rng = np.random.default_rng(0)
video = np.stack([shapes_frames(rng, 64, 16, 1) for _ in range(2)])  # 2 lanes, [B, T, H, W, 1]
frames = torch.from_numpy(video).permute(0, 1, 4, 2, 3).float() / 255  # [B, T, 1, H, W]
model = Stateful(ConvLSTM2d(input_channels=1, hidden_channels=8, kernel_size=3, num_layers=2, batch_first=True))
head = nn.Conv2d(8, 1, 1)
opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
for epoch in range(2):
    model.reset()
    for start in range(0, 56, 8):  # consecutive chunks of 8 frames; the state carries over
        x, y = frames[:, start : start + 8], frames[:, start + 1 : start + 9]
        h = model(x)  # [B, 8, 8, H, W]: the last layer's h at every step
        pred = torch.sigmoid(head(h.flatten(0, 1))).unflatten(0, h.shape[:2])
        loss = nn.functional.mse_loss(pred, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.5f}")
