"""Gates: inside a trained model on one sentence — gate activations, state norms, which units carry number.

Reads and renders only; the frames and charts come from `diagnostics.inspect_gates`.
"""

import streamlit as st

from diagnostics import gates_over_training as got
from diagnostics import inspect_gates as ig
from diagnostics.config import RunConfig
from diagnostics.runner import load_trained_model
from diagnostics.store import StoreError
from ui.common import store as shared_store
from ui.text import literal

def chips(tokens: list[str], highlight: set[int]) -> str:
    """A row of token chips; the highlighted steps (0-based) in orange."""
    return " ".join(f":{'orange' if i in highlight else 'gray'}-badge[{literal(tok)}]" for i, tok in enumerate(tokens))


def show(chart) -> None:
    st.altair_chart(chart, width="stretch")


st.title("Gates")
st.caption("Look inside a trained model on one sentence: what each gate does at each word, how the cell state "
           "grows, and which units carry the subject's number to the verb. Vanilla RNNs show their hidden state "
           "and how much of it is saturated instead.")

store = shared_store()  # the server's one store; a foreign file stops the page with the reason
runs = ig.checkpointed_runs(store)

if not runs:
    st.info(f"No run with trained weights in {literal(store.path)} yet: train one in the Lab first, or from the "
            f"command line with `{ig.TRAIN_COMMAND}`, then come back to this page.")
    st.stop()

labels = {run.id: ig.run_label(run) for run in runs}
index, note = ig.default_run_index(runs, st.query_params.get("run"))
if note:
    st.warning(literal(note))


def remember_run() -> None:
    st.query_params["run"] = str(st.session_state["gates_run"])
    st.query_params.pop("step", None)  # the new run's own last step


def remember_step(key: str) -> None:
    st.query_params["run"] = str(st.session_state["gates_run"])  # the step means nothing without its run
    st.query_params["step"] = str(st.session_state[key])


@st.cache_data(max_entries=32, show_spinner=False)
def over_training(path: str, run_id: int, kept: tuple[int, ...], seed: int, layer: int, _store, _config):
    """The over-training frame of a run's kept checkpoints; `kept` in the key, so a live run's new ones count."""
    return got.stored_training_frame(_store, run_id, _config, seed, layer)


run_id = st.selectbox("Run (only runs with saved weights)", list(labels), index=index, format_func=labels.get,
                      key="gates_run", on_change=remember_run)

try:
    kept = store.checkpoint_steps(run_id)
    step, note = got.chosen_step(kept, st.query_params.get("step")) if kept else (None, None)
    if note:
        st.warning(literal(note))
    if len(kept) > 1:
        step_key = f"gates_step_{run_id}"
        step = st.select_slider("Weights after training step", kept, value=step, key=step_key,
                                on_change=remember_step, args=(step_key,),
                                format_func=lambda s: got.step_label(s, kept[-1]),
                                help="The run keeps its weights at a few steps spread over training (0, 1, 2, 5, "
                                     "10, 20, 50, …, last): move between them to see the gates before and after "
                                     "the network learned.")
    loaded = load_trained_model(store, run_id, step)
    config = RunConfig.from_dict(store.get_run(run_id).config)
except Exception as e:  # a damaged checkpoint or a config this version cannot read: say so, no traceback
    st.error(f"Run #{run_id}'s saved weights cannot be loaded: {literal(e)}")
    st.stop()
if loaded is None:
    st.error(f"Run #{run_id} has no saved weights any more (it may have been deleted); pick another run.")
    st.stop()
model, step = loaded
task = model.task
agreement = task.name == "agreement"
when = "Initial weights, before the first training step" if step == 0 else f"Weights after step {step}"
st.caption(f"{when} of {config.steps}. {config.cell.upper()} with {config.num_layers} "
           f"layer(s) of {config.hidden_size} units on the {task.name} task (seq_len {config.seq_len}).")

controls = st.columns(4)
seed = controls[0].number_input("sentence seed", min_value=0, max_value=2**31 - 1, value=0, step=1,
                                key="gates_seed", help="Draws the sentence from the task's generator.")
layer = controls[1].selectbox("layer", list(range(config.num_layers)), format_func=lambda k: f"layer {k}",
                              key="gates_layer", disabled=config.num_layers == 1)
version = ig.EXAMPLE
if agreement:
    version = controls[2].radio("gates and norms for", ig.VERSIONS, horizontal=True, key="gates_version",
                                help="The sentence with the singular or the plural subject.")
top_k = 0
if agreement and config.hidden_size > 1:
    top_k = controls[3].slider("top units", min_value=1, max_value=config.hidden_size,
                               value=min(10, config.hidden_size), key="gates_top_k",
                               help="How many units the 'carry number' ranking shows.")
elif agreement:
    top_k = 1

probes = ig.draw_probes(model, task, int(seed))
probe = probes[version]
if not ig.all_finite(probes):
    st.warning(f"Run #{run_id}'s saved weights give NaN or infinite states on this sentence (the run ended "
               f"{store.get_run(run_id).status}); non-finite values are left blank in the charts.")

# --- the sentence ----------------------------------------------------------------------------------------
st.subheader("Sentence")
if agreement:
    predictions = ig.agreement_predictions(probes).set_index("sentence")
    for name in ig.VERSIONS:
        row = predictions.loc[name]
        finite = row["P(predicted)"] == row["P(predicted)"]  # NaN from a diverged run's weights
        verdict = "gray" if not finite else "green" if row["correct"] else "red"
        prediction = f"{row['predicted']} {row['P(predicted)']:.0%}" if finite else "no prediction (NaN)"
        st.markdown(f"**{name}:** {chips(probes[name].tokens, {task.subject_position})} → "
                    f":{verdict}-badge[{prediction}]")
    st.caption(f"Orange: the subject, the only word that differs. The model reads every word and predicts the verb "
               f"after the last one (the verb would be word {task.total_steps() + 1}); green = the verb agreement "
               f"requires, red = wrong.")
    st.dataframe(predictions.reset_index()[["sentence", "subject", "expected", "predicted", "P(was)", "P(were)"]],
                 hide_index=True, column_config={
                     "P(was)": st.column_config.NumberColumn(format="%.3f"),
                     "P(were)": st.column_config.NumberColumn(format="%.3f")})
else:
    st.info(f"Run #{run_id} trains the **{task.name}** task, so there is no singular/plural sentence pair; here is "
            f"the task's own example for seed {int(seed)}. Gates and saturation below are on this example.")
    st.markdown(chips(probe.tokens, set()))
    st.code(task.decode(probe.inputs[0]), language=None)
    answer = ig.example_answer(task, probe)
    if answer:
        st.markdown(f"**Model:** {literal(answer)}")

if len(kept) > 1:
    st.subheader("Over training")
    try:
        history = over_training(str(store.path), run_id, tuple(kept), int(seed), layer, store, config)
    except StoreError:
        st.error(f"Run #{run_id} is no longer stored (it was deleted meanwhile); pick another run.")
        st.stop()
    if len(history):
        show(got.training_chart(history, step))
        st.caption(f"{got.TRAINING_CHART_NOTE} {got.AGREEMENT_NOTE if agreement else got.OTHER_TASK_NOTE}")
    else:
        st.info("A vanilla RNN has no gates, and this task has no singular/plural pair to follow over training: "
                "move the step above to compare its hidden state at the kept steps.")

units = ig.units_to_show(probes, layer)
if len(units) < config.hidden_size:
    reason = ("the units whose h_t differs most between the two sentences at the last step" if agreement
              else "the units whose h_t varies most over time")
    st.caption(f"Heatmaps show {len(units)} of {config.hidden_size} units ({reason}), to stay readable.")

# --- gates or saturation ---------------------------------------------------------------------------------
if ig.cell_has_gates(config.cell):
    st.subheader(f"Gates of layer {layer}" + (f" — {version} sentence" if agreement else ""))
    gates = ig.only_units(ig.gate_frame(probe, layer), units)
    names = list(dict.fromkeys(gates["gate"]))
    columns = st.columns(2)
    for i, gate in enumerate(names):
        with columns[i % 2]:
            show(ig.gate_heatmap(gates, gate))
    norms = ig.norm_frame(probe, layer)
    st.subheader("Cell-state norm over time" if config.cell == "lstm" else "Hidden-state norm over time")
    show(ig.norm_chart(norms))
else:
    activation = config.activation
    st.subheader(f"Hidden state of layer {layer}" + (f" — {version} sentence" if agreement else ""))
    left, right = st.columns(2)
    with left:
        show(ig.hidden_heatmap(ig.only_units(ig.state_frame(probe, layer), units), activation))
    saturation = ig.saturation_frame(probe, layer, activation)
    with right:
        show(ig.saturation_chart(saturation, activation))
    hits, total = int(saturation["saturated"].sum()), int(saturation["units"].sum())
    st.caption(f"Saturated over the whole sentence: {hits} of {total} unit-steps ({hits / total:.0%}).")

# --- singular vs plural ----------------------------------------------------------------------------------
if agreement:
    st.subheader("Which units carry number: singular vs plural")
    diff = ig.difference_frame(probes["singular"], probes["plural"], layer)
    top = ig.top_units(diff, top_k)
    for state in diff["state"].unique():
        state_top = top[top["state"] == state]
        best = state_top.iloc[0]
        before = diff[(diff["state"] == state) & (diff["t"] <= task.subject_position)]["difference"].max()
        st.markdown(f"**{state}:** largest difference at the last step {best['difference']:.4f} (unit "
                    f"{int(best['unit'])}); before the subject it is {before:g}.")
        left, right = st.columns([3, 2])
        with left:
            show(ig.difference_heatmap(ig.only_units(diff, units), state))
        with right:
            show(ig.top_units_chart(top, state))
