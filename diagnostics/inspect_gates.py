"""What the Gates page computes: a trained model read on one sentence, as tidy frames and Altair charts.

The page only reads and renders; everything it shows comes from here, so it is tested without Streamlit.

- A *probe* is one input sequence run through the trained model with every hidden state, gate and LSTM cell
  state kept. The agreement task gives two probes, the same sentence with a singular and with a plural subject
  ("cat" / "cats"), so their difference isolates what the network stores about number; other tasks give one
  probe, "example".
- Time steps ``t`` are 1-based (t = 1…T, as the recorder stores them); step t is the state after reading token t.
  Units and layers are 0-based, as in the store. Every frame is for batch row 0 of a probe.
- Saturation uses the recorder's thresholds: tanh |h| > 0.99, sigmoid within 0.01 of 0 or 1, ReLU h == 0
  (here per unit and step of one sentence, not "dead over the whole batch"); linear units never saturate.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import altair as alt
import pandas as pd
import torch
from torch import Tensor

from .cells import GATE_NAMES, Trace
from .config import ConfigError, RunConfig, sentence
from .recorder import SATURATION_SIGMOID, SATURATION_TANH
from .runid import parse_run_id
from .store import RunInfo, Store, StoreError
from .tasks import AddingTask, AgreementTask, CopyTask, Task

# Shown when the store holds no trained weights: train one in the Lab page or with this command.
TRAIN_COMMAND = "python -m diagnostics train --cell lstm --task agreement --seq-len 10 --steps 300"
VERSIONS = ("singular", "plural")  # the agreement pair, in this order
EXAMPLE = "example"  # the one probe of a task without a pair
VERBS = ("was", "were")  # the agreement readout's classes 0 and 1
# A heatmap shows at most this many (time step × unit) cells; beyond it the page shows a subset of units.
MAX_HEATMAP_CELLS = 6000
# Value range of each gate's nonlinearity: sigmoid gates lie in (0, 1), the tanh candidate in (-1, 1).
GATE_DOMAINS = {"candidate": (-1.0, 1.0)}
GATE_MEANING = {
    "input": "how much of the candidate is written into the cell",
    "forget": "how much of the previous cell state is kept (1 = keep everything)",
    "candidate": "the new content proposed for the cell (tanh, −1…1)",
    "output": "how much of tanh(c_t) is exposed as h_t",
    "reset": "how much of W_hn h_{t-1} enters the candidate",
    "update": "how much of h_{t-1} is kept (1 = keep everything)",
}
STATE_NAMES = {"hidden": "hidden state h_t", "cell": "cell state c_t"}


# --- runs ------------------------------------------------------------------------------------------------

def checkpointed_runs(store: Store) -> list[RunInfo]:
    """Runs that have saved weights, newest first (only those can be looked inside)."""
    try:
        conn = sqlite3.connect(f"{store.path.as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:  # ids only: loading every checkpoint's weights just to list them would read megabytes
            ids = {row[0] for row in conn.execute("SELECT DISTINCT run_id FROM checkpoints")}
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise StoreError(f"cannot read the checkpoints of {store.path}: {e}") from e
    return [run for run in store.list_runs() if run.id in ids]


def run_label(run: RunInfo) -> str:
    """"#3 · completed · lstm H8x1 …": what the run picker shows."""
    try:
        summary = RunConfig.from_dict(run.config).summary()
    except (ConfigError, TypeError):
        summary = "config not readable by this version"
    return f"#{run.id} · {run.status} · {summary}"


def default_run_index(runs: list[RunInfo], requested: str | None) -> tuple[int, str | None]:
    """Index of the run named by the `run` query parameter, else 0 (the newest), with a note when it is missing."""
    if requested is None or str(requested).strip() == "":
        return 0, None
    ids = [run.id for run in runs]
    try:
        run_id = parse_run_id(requested)
    except ValueError as e:
        return 0, f"{sentence(e)}; showing the newest run #{ids[0]} instead."
    if run_id in ids:
        return ids.index(run_id), None
    return 0, (f"Run {run_id} from the link has no saved weights in this store (or does not exist); "
               f"showing the newest run #{ids[0]} instead.")


# --- probes ----------------------------------------------------------------------------------------------

@dataclass
class Probe:
    """One sequence through the model: inputs (1, T[, F]), readable tokens, outputs and the full trace."""

    name: str
    inputs: Tensor
    target: Tensor
    tokens: list[str]
    outputs: Tensor
    trace: Trace


def token_labels(task: Task, inputs: Tensor) -> list[str]:
    """One short label per time step of one sequence (batch row 0), as a person reads the input."""
    row = inputs[0]
    if isinstance(task, AgreementTask):
        return [task.vocab[i] for i in row.tolist()]
    if isinstance(task, CopyTask):
        return ["|" if i == task.delimiter else "_" if i == 0 else str(i) for i in row.tolist()]
    if isinstance(task, AddingTask):
        return [f"[{v:.2f}]" if m > 0 else f"{v:.2f}" for v, m in row.tolist()]
    return [str(t + 1) for t in range(row.shape[0])]


def draw_probes(model: torch.nn.Module, task: Task, seed: int) -> dict[str, Probe]:
    """The sentence for `seed`: the singular/plural pair for agreement, else one example, run through `model`."""
    generator = torch.Generator().manual_seed(int(seed))
    if isinstance(task, AgreementTask):
        singular, plural = task.pair(generator)
        sequences = {"singular": (singular, torch.tensor([0])), "plural": (plural, torch.tensor([1]))}
    else:
        inputs, target = task.sample(1, generator)
        sequences = {EXAMPLE: (inputs, target)}
    model.eval()
    probes = {}
    with torch.no_grad():
        for name, (inputs, target) in sequences.items():
            outputs, trace = model(inputs, keep_gates=True)
            probes[name] = Probe(name, inputs, target, token_labels(task, inputs), outputs, trace)
    return probes


def all_finite(probes: dict[str, Probe]) -> bool:
    """Whether every output and state of every probe is finite (a diverged run's weights give NaN/Inf)."""
    for probe in probes.values():
        tensors = [probe.outputs, *(h for layer in probe.trace.hiddens for h in layer),
                   *(c for layer in probe.trace.cells for c in layer)]
        if not all(bool(torch.isfinite(x).all()) for x in tensors):
            return False
    return True


def tokens_frame(probes: dict[str, Probe], task: Task) -> pd.DataFrame:
    """t, one token column per probe, and the role of the step ("subject" where the pair differs)."""
    first = next(iter(probes.values()))
    df = pd.DataFrame({"t": range(1, len(first.tokens) + 1)})
    for name, probe in probes.items():
        df[name] = probe.tokens
    role = [""] * len(df)
    if isinstance(task, AgreementTask):
        role[task.subject_position] = "subject"
        role[-1] = "last word: the verb is predicted here"
    df["role"] = role
    return df


def agreement_predictions(probes: dict[str, Probe]) -> pd.DataFrame:
    """Per version of the sentence: subject, the verb agreement requires, the model's verb and probabilities."""
    rows = []
    for name in VERSIONS:
        probe = probes[name]
        p = torch.softmax(probe.outputs[0].double(), dim=-1).tolist()
        expected = VERBS[int(probe.target[0])]
        predicted = VERBS[int(p[1] > p[0])]
        rows.append({"sentence": name, "subject": probe.tokens[AgreementTask.subject_position],
                     "expected": expected, "predicted": predicted, "P(was)": p[0], "P(were)": p[1],
                     "P(predicted)": max(p), "correct": predicted == expected})
    return pd.DataFrame(rows)


def example_answer(task: Task, probe: Probe) -> str:
    """The model's answer to a non-agreement example next to the right one, in the task's own terms."""
    if isinstance(task, AddingTask):
        return f"model's sum {probe.outputs[0, 0].item():.3f}, true sum {probe.target[0, 0].item():.3f}"
    if isinstance(task, CopyTask):
        k = task.n_copy
        said = probe.outputs[0, -k:].argmax(-1)
        truth = probe.target[0, -k:]
        right = int((said == truth).sum())
        return (f"model recalls {' '.join(map(str, said.tolist()))}; true {' '.join(map(str, truth.tolist()))} "
                f"({right} of {k} right)")
    return ""


# --- tidy frames -----------------------------------------------------------------------------------------

def _steps(tokens: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"t": range(1, len(tokens) + 1), "token": tokens,
                         "step": [f"{t} {tok}" for t, tok in enumerate(tokens, start=1)]})


def _long(values: Tensor, tokens: list[str], **columns) -> pd.DataFrame:
    """(T, H) values → rows t, token, step, unit, value (t-major), with constant extra columns first."""
    T, H = values.shape
    steps = _steps(tokens).loc[lambda d: d.index.repeat(H)].reset_index(drop=True)
    df = pd.DataFrame({**columns, **{c: steps[c] for c in steps}, "unit": list(range(H)) * T,
                       "value": values.detach().double().reshape(-1).numpy()})
    return df


def _stack(states: list[Tensor]) -> Tensor:
    return torch.stack([s[0] for s in states])  # per t (B, H) → (T, H) of batch row 0


def gate_frame(probe: Probe, layer: int) -> pd.DataFrame:
    """Every gate's activation: gate, t, token, step, unit, value (empty for a vanilla RNN)."""
    gates = probe.trace.gates[layer]
    frames = [_long(_stack(gates[name]), probe.tokens, gate=name) for name in gates if gates[name]]
    if not frames:
        return pd.DataFrame(columns=["gate", "t", "token", "step", "unit", "value"])
    return pd.concat(frames, ignore_index=True)


def states(probe: Probe, layer: int) -> dict[str, Tensor]:
    """(T, H) hidden states and, for an LSTM, cell states of one layer."""
    out = {"hidden": _stack(probe.trace.hiddens[layer])}
    if probe.trace.cells and probe.trace.cells[layer]:
        out["cell"] = _stack(probe.trace.cells[layer])
    return out


def state_frame(probe: Probe, layer: int, state: str = "hidden") -> pd.DataFrame:
    """h_t (or c_t) per unit: t, token, step, unit, value."""
    return _long(states(probe, layer)[state], probe.tokens)


def norm_frame(probe: Probe, layer: int) -> pd.DataFrame:
    """‖c_t‖ (LSTM) and ‖h_t‖ over time: state, t, token, step, norm."""
    frames = []
    for state, values in states(probe, layer).items():
        df = _steps(probe.tokens)
        df.insert(0, "state", STATE_NAMES[state])
        df["norm"] = torch.linalg.vector_norm(values.double(), dim=1).numpy()
        frames.append(df)
    return pd.concat(frames[::-1], ignore_index=True)  # cell state first when there is one


def saturated(h: Tensor, activation: str) -> Tensor:
    """Boolean mask of units where the activation's derivative is ~0 (see the module docstring)."""
    if activation == "tanh":
        return h.abs() > SATURATION_TANH
    if activation == "sigmoid":
        return (h < SATURATION_SIGMOID) | (h > 1 - SATURATION_SIGMOID)
    if activation == "relu":
        return h <= 0
    return torch.zeros_like(h, dtype=torch.bool)


def saturation_frame(probe: Probe, layer: int, activation: str) -> pd.DataFrame:
    """Per time step: t, token, step, saturated (units), units, share (saturated / units)."""
    h = states(probe, layer)["hidden"]
    mask = saturated(h, activation)
    df = _steps(probe.tokens)
    df["saturated"] = mask.sum(dim=1).numpy()
    df["units"] = h.shape[1]
    df["share"] = mask.double().mean(dim=1).numpy()
    return df


def difference_frame(singular: Probe, plural: Probe, layer: int) -> pd.DataFrame:
    """|state(singular) − state(plural)| per unit and step: state, t, token, step, unit, singular, plural, difference.

    The token is "cat/cats" where the two sentences differ. Before the subject both read the same tokens
    from the same zero state, so the difference there is exactly 0."""
    tokens = [a if a == b else f"{a}/{b}" for a, b in zip(singular.tokens, plural.tokens)]
    frames = []
    s_states, p_states = states(singular, layer), states(plural, layer)
    for state in s_states:
        s, p = s_states[state].double(), p_states[state].double()
        df = _long(s, tokens, state=STATE_NAMES[state]).rename(columns={"value": "singular"})
        df["plural"] = p.reshape(-1).numpy()
        df["difference"] = (s - p).abs().reshape(-1).numpy()
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def top_units(diff: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per state, the k units with the largest difference at the last step (where the verb is predicted).

    Columns: state, rank (1 = largest), unit, difference, singular, plural, sign ("singular higher" or
    "plural higher"). Ties keep the lower unit first."""
    last = diff[diff["t"] == diff["t"].max()]
    out = []
    for state, group in last.groupby("state", sort=False):
        top = group.sort_values(["difference", "unit"], ascending=[False, True], kind="stable").head(max(1, k))
        top = top[["state", "unit", "difference", "singular", "plural"]].reset_index(drop=True)
        top.insert(1, "rank", range(1, len(top) + 1))
        top["sign"] = ["singular higher" if s > p else "plural higher" for s, p in zip(top["singular"],
                                                                                       top["plural"])]
        out.append(top)
    return pd.concat(out, ignore_index=True)


def unit_budget(steps: int, units: int) -> int:
    """How many units one heatmap can show over `steps` time steps within MAX_HEATMAP_CELLS."""
    return max(1, min(units, MAX_HEATMAP_CELLS // max(1, steps)))


def units_to_show(probes: dict[str, Probe], layer: int) -> list[int]:
    """The units every heatmap of this layer shows: all when they fit, else the most informative ones.

    With a singular/plural pair: the units whose h differs most at the last step (they carry number);
    otherwise the units whose h varies most over time. Returned in unit order."""
    first = next(iter(probes.values()))
    h = states(first, layer)["hidden"].double()
    T, H = h.shape
    budget = unit_budget(T, H)
    if budget >= H:
        return list(range(H))
    if all(name in probes for name in VERSIONS):
        score = (h[-1] - states(probes["plural"], layer)["hidden"].double()[-1]).abs()
    else:
        score = h.std(dim=0) if T > 1 else h.abs()[0]
    score = torch.nan_to_num(score, nan=-1.0)
    return sorted(torch.argsort(score, descending=True, stable=True)[:budget].tolist())


def only_units(df: pd.DataFrame, units: list[int]) -> pd.DataFrame:
    return df[df["unit"].isin(units)].reset_index(drop=True)


# --- charts ----------------------------------------------------------------------------------------------

def _finite_max(values: pd.Series, floor: float = 1e-6) -> float:
    """Largest finite value (at least `floor`), so a scale domain stays valid JSON when states hold NaN/Inf."""
    finite = pd.to_numeric(values, errors="coerce").replace([float("inf"), float("-inf")], float("nan")).dropna()
    return max(float(finite.max()), floor) if len(finite) else 1.0


def _x_steps(df: pd.DataFrame) -> alt.X:
    """Time steps labelled "t token", in time order (ordinal, so every step is one column)."""
    order = df.drop_duplicates("t").sort_values("t")["step"].tolist()
    return alt.X("step:O", sort=order, title="time step t and the token read at it",
                 axis=alt.Axis(labelAngle=-45))


def _heatmap(df: pd.DataFrame, title: str, subtitle: str, colour: str, colour_title: str,
             domain: tuple[float, float] | None, scheme: str, extra_tooltip=()) -> alt.Chart:
    scale = alt.Scale(scheme=scheme) if domain is None else alt.Scale(domain=list(domain), scheme=scheme)
    return alt.Chart(df, title=alt.Title(title, subtitle=subtitle)).mark_rect().encode(
        x=_x_steps(df),
        y=alt.Y("unit:O", title="unit (index in the layer)"),
        color=alt.Color(f"{colour}:Q", scale=scale, legend=alt.Legend(title=colour_title)),
        tooltip=[alt.Tooltip("t:Q", title="t"), alt.Tooltip("token:N"), alt.Tooltip("unit:Q"),
                 alt.Tooltip(f"{colour}:Q", title=colour_title, format=".3f"), *extra_tooltip],
    )


def gate_heatmap(df: pd.DataFrame, gate: str) -> alt.Chart:
    """One gate's activation over time steps × units (from `gate_frame`)."""
    lo, hi = GATE_DOMAINS.get(gate, (0.0, 1.0))
    return _heatmap(df[df["gate"] == gate], f"{gate} gate", GATE_MEANING.get(gate, ""), "value",
                    f"{gate} activation ({lo:g}…{hi:g})", (lo, hi),
                    "blueorange" if lo < 0 else "viridis")


def hidden_heatmap(df: pd.DataFrame, activation: str) -> alt.Chart:
    """h_t over time steps × units (from `state_frame`), on the activation's range."""
    if activation == "tanh":
        domain, scheme = (-1.0, 1.0), "blueorange"
    elif activation == "sigmoid":
        domain, scheme = (0.0, 1.0), "viridis"
    elif activation == "relu":
        domain, scheme = (0.0, _finite_max(df["value"])), "viridis"
    else:
        bound = _finite_max(df["value"].abs())
        domain, scheme = (-bound, bound), "blueorange"
    return _heatmap(df, f"Hidden state h_t ({activation})",
                    "each unit's value after reading token t", "value",
                    f"h_t ({domain[0]:.3g}…{domain[1]:.3g})", domain, scheme)


def norm_chart(df: pd.DataFrame) -> alt.Chart:
    """‖c_t‖ and ‖h_t‖ over time (from `norm_frame`)."""
    return alt.Chart(df, title=alt.Title("State norm over time",
                                         subtitle="L2 norm over the layer's units after reading token t")
                     ).mark_line(point=True).encode(
        x=_x_steps(df),
        y=alt.Y("norm:Q", title="L2 norm ‖·‖ (no unit)"),
        color=alt.Color("state:N", legend=alt.Legend(title="state")),
        tooltip=[alt.Tooltip("state:N"), alt.Tooltip("t:Q"), alt.Tooltip("token:N"),
                 alt.Tooltip("norm:Q", format=".3f")],
    )


def saturation_chart(df: pd.DataFrame, activation: str) -> alt.Chart:
    """Share of saturated hidden units per time step (from `saturation_frame`)."""
    rule = {"tanh": f"|h| > {SATURATION_TANH}", "sigmoid": f"h within {SATURATION_SIGMOID} of 0 or 1",
            "relu": "h = 0 (ReLU off)", "linear": "never (linear units do not saturate)"}[activation]
    return alt.Chart(df, title=alt.Title("Saturated hidden units", subtitle=f"saturated: {rule}; "
                                         "a saturated unit passes almost no gradient")).mark_bar().encode(
        x=_x_steps(df),
        y=alt.Y("share:Q", title="share of units saturated", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        color=alt.Color("share:Q", scale=alt.Scale(domain=[0, 1], scheme="orangered"),
                        legend=alt.Legend(title="share saturated", format="%")),
        tooltip=[alt.Tooltip("t:Q"), alt.Tooltip("token:N"), alt.Tooltip("saturated:Q", title="saturated units"),
                 alt.Tooltip("units:Q"), alt.Tooltip("share:Q", format=".1%")],
    )


def difference_heatmap(df: pd.DataFrame, state: str) -> alt.Chart:
    """|state(singular) − state(plural)| over time steps × units (from `difference_frame`, one state)."""
    sub = df[df["state"] == state]
    symbol = "c_t" if state == STATE_NAMES["cell"] else "h_t"
    return _heatmap(sub, f"Singular vs plural: |{symbol}(sing) − {symbol}(plur)|",
                    "0 before the subject; what survives to the last step is how the layer stores number",
                    "difference", f"|Δ{symbol}|", (0.0, _finite_max(sub["difference"])), "reds",
                    extra_tooltip=(alt.Tooltip("singular:Q", format=".3f"),
                                   alt.Tooltip("plural:Q", format=".3f")))


def top_units_chart(top: pd.DataFrame, state: str) -> alt.Chart:
    """The k units that differ most at the last step (from `top_units`, one state), largest first."""
    sub = top[top["state"] == state]
    symbol = "c_t" if state == STATE_NAMES["cell"] else "h_t"
    return alt.Chart(sub, title=alt.Title(f"Units carrying number ({symbol}, last step)",
                                          subtitle="ranked by |singular − plural| where the verb is predicted")
                     ).mark_bar().encode(
        x=alt.X("difference:Q", title=f"|Δ{symbol}| at the last step"),
        y=alt.Y("unit:O", sort="-x", title="unit (index in the layer)"),
        color=alt.Color("sign:N", scale=alt.Scale(domain=["singular higher", "plural higher"]),
                        legend=alt.Legend(title="which sentence is higher")),
        tooltip=[alt.Tooltip("rank:Q"), alt.Tooltip("unit:Q"), alt.Tooltip("difference:Q", format=".4f"),
                 alt.Tooltip("singular:Q", format=".3f"), alt.Tooltip("plural:Q", format=".3f")],
    )


def cell_has_gates(cell: str) -> bool:
    return bool(GATE_NAMES.get(cell))
