"""Imported once by the forkserver that forks every dashboard run's process: a tiny recorded step of each cell.

A fresh process pays for torch's lazy parts on its first training step (importing dynamo on the first backward
and the like: 1.3 s of a lesson link's wait for its first chart, against 10 ms for a warm step). Done here,
before the forks, every run's process inherits them. One thread, as the runs use: a fork must not inherit a
running OpenMP pool.
"""

import torch

from .config import CELLS, RunConfig
from .train import train

torch.set_num_threads(1)
for _cell in CELLS:
    train(RunConfig(cell=_cell, steps=2, seq_len=2, hidden_size=2, batch_size=2, record_every=1))
