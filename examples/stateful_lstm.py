"""Recipe 1 — a stateful LSTM over a long sequence, trained in consecutive chunks (truncated BPTT).

The recipe kept ``self.hidden = (h, c)`` in a hand-written ``StatefulLSTM`` and crashed on the second
``backward()``; with only the import changed, the same loop runs (the state is detached after every
call, as truncated backpropagation through time wants).
"""

import torch
from torch import nn

from convlstm_cli import Stateful  # the recipe: from models import StatefulLSTM

torch.manual_seed(0)
lanes, steps, chunk = 4, 400, 20
t = torch.arange(steps + 1, dtype=torch.float32)
signal = torch.stack([torch.sin(t * f) for f in (0.05, 0.1, 0.2, 0.3)])  # one frequency per lane
model = Stateful(nn.LSTM(input_size=1, hidden_size=16, num_layers=2, batch_first=True))
head = nn.Linear(16, 1)
opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
for epoch in range(3):
    model.reset()  # a new pass over the sequences: every lane starts fresh
    for start in range(0, steps, chunk):
        x = signal[:, start : start + chunk, None]
        y = signal[:, start + 1 : start + chunk + 1, None]
        loss = nn.functional.mse_loss(head(model(x)), y)
        opt.zero_grad()
        loss.backward()  # the recipe crashed here on the second chunk
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
