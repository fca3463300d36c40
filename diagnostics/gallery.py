"""What the home page shows of the models and tasks: examples drawn from the real task generators."""

from __future__ import annotations

import pandas as pd
import torch

from .cells import GATE_NAMES
from .config import TASK_NAMES
from .tasks import make_task

CELL_EQUATIONS = {
    "rnn": r"h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})",
    "lstm": r"c_t = f_t \odot c_{t-1} + i_t \odot g_t,\quad h_t = o_t \odot \tanh(c_t)",
    "gru": r"h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}",
}


def task_examples(seq_len: int = 8, seed: int = 0) -> pd.DataFrame:
    """One decoded example per task with its metric and memoryless baseline."""
    rows = []
    for name in TASK_NAMES:
        task = make_task(name, seq_len)
        inputs, _ = task.sample(1, torch.Generator().manual_seed(seed))
        rows.append({"task": name, "example": task.decode(inputs[0]), "sequence length": task.total_steps(),
                     "metric": task.metric_name, "memoryless baseline": f"{task.baseline:.3g} ({task.baseline_label})"})
    return pd.DataFrame(rows)


def cell_table() -> pd.DataFrame:
    """Cells with their equation and the gates the lab records."""
    return pd.DataFrame([{"cell": c, "equation": eq, "gates recorded": ", ".join(GATE_NAMES[c]) or "—"}
                         for c, eq in CELL_EQUATIONS.items()])
