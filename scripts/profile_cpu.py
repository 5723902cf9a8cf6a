"""Where a CPU training step goes: torch.profiler over the default model's step (bf16, channels_last).

    python scripts/profile_cpu.py [--dense] [--compile] [--advect] [--steps N]

Prints the operators by self CPU time. The step is `convlstm train`'s (`convlstm_cli.step.train_step`)
on random frames at the default sizes (64×64 gray, batch 8, context 10, horizon 5).
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from convlstm_cli.config import RunConfig
from convlstm_cli.device import autocast, resolve_precision
from convlstm_cli.model.forecaster import EncoderForecaster, EveryStep
from convlstm_cli.step import make_optimizer, train_step

parser = argparse.ArgumentParser()
parser.add_argument("--dense", action="store_true", help="the dense loss (every step supervised)")
parser.add_argument("--compile", action="store_true", help="torch.compile the model (the bench's +compile rung)")
parser.add_argument("--advect", action="store_true", help="model.advect: each level's state warped by its flow")
parser.add_argument("--steps", type=int, default=10)
args = parser.parse_args()
cfg, dev = RunConfig(), torch.device("cpu")
cfg.model.advect = args.advect
prec = resolve_precision("auto", dev)
torch.manual_seed(0)
model = EncoderForecaster.from_config(cfg.model).to(memory_format=torch.channels_last)
net = EveryStep(model) if args.dense else model
net = torch.compile(net) if args.compile else net
opt, fused = make_optimizer(model.parameters(), dev, 1e-3)
b, c, k = cfg.data.batch_size, cfg.data.context, cfg.model.horizon
x = torch.rand(b, c, 1, 64, 64)
y = torch.rand(b, c - 1 + k if args.dense else k, 1, 64, 64)
state = None


def step():
    global state
    _, _, state = train_step(net, opt, [(x, y, None)], state, params=list(model.parameters()), fused=fused,
                             amp=lambda: autocast(dev, prec), grad_clip=1.0,
                             start=lambda inputs, reset, s: model.initial_state(inputs, s))


for _ in range(3):
    step()
t0 = time.perf_counter()
for _ in range(args.steps):
    step()
print(f"{prec}, dense={args.dense}, compile={args.compile}, advect={args.advect}: {(time.perf_counter() - t0) / args.steps * 1e3:.1f} ms per step")
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(3):
        step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
