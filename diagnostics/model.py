"""A task's whole model: one-hot or float inputs → `RecurrentNet` → a linear readout, built from a `RunConfig`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .cells import RecurrentNet, Trace
from .config import RunConfig
from .initialisers import initialise
from .tasks import Task, make_task


class RecurrentModel(nn.Module):
    """Token tasks feed one-hot vectors (as row lookups), so W_ih is the only input map and inits act on it."""

    def __init__(self, config: RunConfig, task: Task):
        super().__init__()
        self.task = task
        self.rnn = RecurrentNet(config.cell, task.input_size, config.hidden_size, config.num_layers,
                                config.activation)
        self.readout = nn.Linear(config.hidden_size, task.output_size)

    def forward(self, inputs: Tensor, keep_gates: bool = True) -> tuple[Tensor, Trace]:
        """Outputs (B, output_size) when the task scores the last step only, else (B, T, output_size)."""
        trace = self.rnn(inputs, keep_gates=keep_gates)
        last = trace.hiddens[-1][-1] if self.task.last_step_only else trace.outputs
        return self.readout(last), trace


def build(config: RunConfig) -> tuple[RecurrentModel, Task]:
    """Task and initialised model for a config; everything random comes from `config.seed`."""
    task = task_of(config)
    torch.manual_seed(config.seed)
    model = RecurrentModel(config, task)
    generator = torch.Generator().manual_seed(config.seed)
    initialise(model.rnn, cell=config.cell, activation=config.activation, init=config.init,
               init_scale=config.init_scale, forget_bias=config.forget_bias, generator=generator)
    return model, task


def task_options(config: RunConfig) -> dict:
    return {"attractor_rate": config.attractor_rate} if config.task == "agreement" else {}


def task_of(config: RunConfig) -> Task:
    """The config's task alone (no model), e.g. for its sequence length, baselines and dependency."""
    return make_task(config.task, config.seq_len, **task_options(config))
