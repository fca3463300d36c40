"""What the diagnosis needs to know about a recorded model, apart from how a lab run was configured.

A lab run's description follows from its `RunConfig`; a watched model (`watch`) has no `RunConfig`, so every run
stores its description beside its config and the verdicts read the description. Training facts that decide
what a chart means (the optimiser, the clipping threshold) are part of it where they are known."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .config import ConfigError, RunConfig


@dataclass(frozen=True)
class RecurrentModule:
    """One `nn.RNN/LSTM/GRU`-shaped module, named by its path in the model (the lab's is "rnn")."""

    path: str
    cell: str  # rnn, lstm or gru
    num_layers: int
    hidden_size: int
    activation: str = "tanh"  # of a vanilla RNN; gated cells always use sigmoid gates and tanh
    directions: int = 1

    def weight_hh(self, layer: int, direction: int = 0) -> str:
        """The recurrent matrix's parameter name, as recorded (`rnn.weight_hh_l1`, `…_l1_reverse`)."""
        return f"{self.weight_hh_prefix}{layer}" + ("_reverse" if direction else "")

    @property
    def weight_hh_prefix(self) -> str:
        """What every layer's recurrent matrix name starts with, for reads that select them all (a model that is
        itself the recurrent module has path "" and names without a prefix)."""
        return f"{self.path}.weight_hh_l" if self.path else "weight_hh_l"

    @property
    def label(self) -> str:
        return self.path or "the model"

    @property
    def activation_of_state(self) -> str:
        """The nonlinearity the hidden state passes through: the vanilla RNN's own, tanh for gated cells."""
        return self.activation if self.cell == "rnn" else "tanh"

    @property
    def lane_count(self) -> int:
        return self.num_layers * self.directions


@dataclass(frozen=True)
class Lane:
    """One layer and direction of one recurrent module: what a recorded row's `layer` column indexes. A lab model
    has one module with one direction, so its lane k is its layer k."""

    module: RecurrentModule
    layer: int
    direction: int  # 0 forward, 1 reverse

    @property
    def name(self) -> str:
        return (f"{self.module.path} " if self.module.path else "") + f"layer {self.layer}" + \
            (" reverse" if self.direction else "")

    @property
    def weight_hh(self) -> str:
        return self.module.weight_hh(self.layer, self.direction)


WHOLE_MODEL_ROWS = ("loss", "penalty", "grad_norm")  # ledger tensors that name no parameter (rundata.EVENT_NONFINITE)
_PARAMETER = re.compile(r"^(?:(?P<module>.*)\.)?(?P<parameter>(?:weight|bias)_(?:ih|hh)_l(?P<layer>\d+)"
                        r"(?P<reverse>_reverse)?)$")


@dataclass(frozen=True)
class ModelDescription:
    """The recorded model's recurrent modules, the sequence length it saw, its task when it is one of the
    lab's (the baseline the outcome is judged against), and its optimiser and clipping when known."""

    modules: tuple[RecurrentModule, ...]
    seq_len: int | None = None
    task: str | None = None
    optimizer: str | None = None
    clip: str | None = None  # none, norm or value; None: not known (a user's own loop)
    clip_threshold: float | None = None
    name: str | None = None  # what the user called a watched run (`watch(..., name=)`)
    source: str = "lab"  # "lab": trained by `train` from its RunConfig; "watch": a user's own model and loop

    @property
    def recurrent(self) -> RecurrentModule:
        """The module the per-layer verdicts read: a lab model has exactly one."""
        return self.modules[0]

    def lanes(self) -> list[Lane]:
        """Every module's layers and directions in recording order: modules, then layers, then directions."""
        return [Lane(m, layer, d) for m in self.modules for layer in range(m.num_layers) for d in range(m.directions)]

    def lane_of(self, parameter: str) -> int | None:
        """The lane a parameter belongs to (`encoder.lstm.weight_hh_l1_reverse` → its lane), None for the rest."""
        found = _PARAMETER.match(parameter)
        if found is None:
            return None
        key = (found["module"] or "", int(found["layer"]), 1 if found["reverse"] else 0)
        for i, lane in enumerate(self.lanes()):
            if (lane.module.path, lane.layer, lane.direction) == key:
                return i
        return None

    def locate(self, tensor: str, lane: int | None) -> dict:
        """Where a ledger row's tensor sits: module path, parameter, layer within the module and direction."""
        name = tensor.split(":", 1)[-1]
        lanes = self.lanes()
        if lane is not None and 0 <= lane < len(lanes):
            at = lanes[lane]
            # "hidden" / "grad:hidden": a hidden state or its gradient, not a parameter
            prefix = f"{at.module.path}." if at.module.path else ""
            parameter = None if name == "hidden" else name.removeprefix(prefix)
            return {"module": at.module.path, "parameter": parameter, "layer": at.layer,
                    "direction": "reverse" if at.direction else "forward"}
        if tensor in WHOLE_MODEL_ROWS:  # the loss, the penalty, a norm over every gradient: no one parameter
            return {"module": None, "parameter": None, "layer": None, "direction": None}
        module, _, parameter = name.rpartition(".")
        return {"module": module or None, "parameter": parameter, "layer": None, "direction": None}

    @property
    def watched(self) -> bool:
        return self.source == "watch"

    def summary(self) -> str:
        """"watched my-model: encoder.rnn lstm H64x2 bidirectional": what a run list shows of a watched model."""
        modules = ", ".join(f"{m.path or 'model'} {m.cell}" + (f" {m.activation}" if m.cell == "rnn" else "")
                            + f" H{m.hidden_size}x{m.num_layers}" + (" bidirectional" if m.directions == 2 else "")
                            for m in self.modules)
        return f"watched {self.name or 'model'}: {modules}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelDescription":
        modules = tuple(RecurrentModule(**m) for m in data.get("modules", ()))
        if not modules:
            raise ConfigError("a model description needs at least one recurrent module")
        return cls(modules=modules, **{k: v for k, v in data.items() if k != "modules"})


def describe(config: RunConfig) -> ModelDescription:
    """A lab run's model: one module `rnn` as the config builds it."""
    module = RecurrentModule(path="rnn", cell=config.cell, num_layers=config.num_layers,
                             hidden_size=config.hidden_size, activation=config.activation)
    return ModelDescription(modules=(module,), seq_len=config.seq_len, task=config.task,
                            optimizer=config.optimizer, clip=config.clip, clip_threshold=config.clip_threshold)


def stored_description(description: dict, config: dict) -> ModelDescription:
    """A stored run's description; runs stored before descriptions were kept derive theirs from their config."""
    if description:
        return ModelDescription.from_dict(description)
    return describe(RunConfig.from_dict(config))
