"""What a user writes without the lab: PyTorch's fused nn.LSTM/GRU/RNN and a bare training loop."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diagnostics.config import RunConfig
from diagnostics.model import build
from diagnostics.optimizers import make_optimizer

FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class PlainModel(nn.Module):
    """One-hot tokens (or float inputs) into a fused recurrent module and a linear readout."""

    def __init__(self, config: RunConfig):
        super().__init__()
        # `build` gives the same task and the lab's initialised weights, so both sides start from one point.
        ours, self.task = build(config)
        extra = {"nonlinearity": config.activation} if config.cell == "rnn" else {}
        self.rnn = FUSED[config.cell](self.task.input_size, config.hidden_size, config.num_layers,
                                      batch_first=True, **extra)
        self.readout = ours.readout
        self.rnn.load_state_dict(ours.rnn.state_dict())

    def forward(self, inputs: Tensor) -> Tensor:
        x = F.one_hot(inputs, self.task.input_size).float() if inputs.dtype == torch.long else inputs
        out, _ = self.rnn(x)
        return self.readout(out[:, -1] if self.task.last_step_only else out)


def plain_loop(config: RunConfig, model: Callable[[Tensor], Tensor], params: list[nn.Parameter], task,
               on_step: Callable[[int], None]) -> None:
    """The usual loop: sample, forward, loss, backward, clip, step, and the loss as a number for the log."""
    torch.set_flush_denormal(True)  # as `train` does, in this thread
    optimizer = make_optimizer(config.optimizer, params, lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(config.seed)
    for step in range(1, config.steps + 1):
        inputs, targets = task.sample(config.batch_size, generator)
        loss = task.loss(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip == "norm":
            torch.nn.utils.clip_grad_norm_(params, config.clip_threshold)
        optimizer.step()
        loss.item()
        on_step(step)


def fused_loop(config: RunConfig) -> Callable[[Callable[[int], None]], None]:
    """The plain loop over PyTorch's fused module."""
    def loop(on_step):
        model = PlainModel(config)
        plain_loop(config, model, list(model.parameters()), model.task, on_step)
    return loop


def unrolled_loop(config: RunConfig) -> Callable[[Callable[[int], None]], None]:
    """The same plain loop over the lab's written-out cells, with nothing recorded."""
    def loop(on_step):
        model, task = build(config)
        plain_loop(config, lambda x: model(x, keep_gates=False)[0], list(model.parameters()), task, on_step)
    return loop
