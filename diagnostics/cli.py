"""`python -m diagnostics`: train, list, export and delete runs. Flags of `train` come from `RunConfig`'s
fields (`hidden_size` → `--hidden-size`), so a new config field is a new flag without a second list."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time

from .config import ConfigError, RunConfig, allowed_text
from .description import ModelDescription
from .runid import parse_run_id
from .runner import run_into_store, use_torch_threads
from .store import Store, StoreError, strict_json
from .summary import RunSummary

EXPORT_FORMATS = ("csv", "parquet")


class CliError(Exception):
    """A user mistake: printed as one line on stderr, exit code 2, no traceback."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _run_id(raw: str) -> int:
    """argparse's type for a run id: its ValueError message is what the user reads (exit code 2)."""
    try:
        return parse_run_id(raw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diagnostics",
                                     description="Train recurrent nets while recording their gradient flow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,runs,export,delete}")
    db_help = "run store (SQLite file); default $GFL_DB or runs/runs.sqlite"

    train = sub.add_parser("train", help="train one run, record it into the store, print its diagnosis")
    defaults = RunConfig()
    for group_name in dict.fromkeys(f.metadata["group"] for f in dataclasses.fields(RunConfig)):
        group = train.add_argument_group(group_name)
        for f in dataclasses.fields(RunConfig):
            if f.metadata["group"] == group_name:
                # Parsed by RunConfig itself, so flags, URLs and JSON share one set of messages.
                group.add_argument(flag(f.name), dest=f.name, metavar=f.name.upper(),
                                   help=f"{f.metadata['help']} Allowed: {allowed_text(f)}. "
                                        f"Default: {getattr(defaults, f.name)}.")
    train.add_argument("--db", help=db_help)
    train.add_argument("--json", action="store_true",
                       help="print one strict-JSON summary object as the last stdout line")
    train.add_argument("--quiet", action="store_true", help="no progress bar on stderr")

    runs = sub.add_parser("runs", help="list stored runs")
    runs.add_argument("--db", help=db_help)
    runs.add_argument("--json", action="store_true", help="print the list as one JSON array")

    export = sub.add_parser("export", help="write one run's tables as CSV or Parquet files into a folder")
    export.add_argument("run_id", type=_run_id, metavar="RUN_ID")
    export.add_argument("--format", required=True, help=f"one of {', '.join(EXPORT_FORMATS)}")
    export.add_argument("--out", required=True, help="folder to write into (created if missing)")
    export.add_argument("--db", help=db_help)

    delete = sub.add_parser("delete", help="delete one stored run and all its data")
    delete.add_argument("run_id", type=_run_id, metavar="RUN_ID")
    delete.add_argument("--db", help=db_help)

    for name, what in (("pin", "keep one run when a server's store quota (GFL_STORE_MB) prunes old runs"),
                       ("unpin", "let a pinned run be pruned again")):
        pin = sub.add_parser(name, help=what)
        pin.add_argument("run_id", type=_run_id, metavar="RUN_ID")
        pin.add_argument("--db", help=db_help)
    return parser


class Progress:
    """A one-line progress bar on stderr, redrawn at most 5 times a second."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.started = self.last = time.perf_counter()
        self.tty = stream.isatty()

    def __call__(self, summary: RunSummary) -> None:
        now = time.perf_counter()
        done = summary.steps_done
        if done < self.total and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 30
        bar = "#" * int(width * done / self.total)
        loss = "n/a" if summary.final_loss is None else f"{summary.final_loss:.4g}"
        line = f"[{bar:<{width}}] {done}/{self.total} steps  {rate:.1f} steps/s  ETA {eta:.0f}s  loss {loss}"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def cmd_train(args) -> int:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
              if getattr(args, f.name) is not None}
    config = RunConfig.from_dict(values)
    store = Store(args.db)
    use_torch_threads()
    stop = threading.Event()

    def request_stop(signum, frame):  # Ctrl-C / SIGTERM end the run cleanly as "stopped"
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = None if args.quiet else Progress(config.steps)
    try:
        summary = run_into_store(config, store, stop=stop, on_step=progress)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if progress is not None:
            progress.close()
    if args.json:
        print(summary.to_json())
    else:
        print(human_summary(summary))
    return 0


def human_summary(s: RunSummary) -> str:
    lines = [f"run {s.run_id}: {s.status} after {s.steps_done} steps in {s.train_seconds:.1f}s",
             f"final loss {_num(s.final_loss)}, held-out {s.metric_name} {_num(s.final_metric)}, "
             f"max gradient norm {_num(s.max_grad_norm)}, clipped on {s.clip_rate:.0%} of steps"]
    if s.first_nonfinite:
        e = s.first_nonfinite
        lines.append(f"first NaN/Inf: step {e['step']}, {e['tensor']}, layer {e['layer']}, time step {e['time_step']}")
    if s.time_grad_ratio is not None:
        horizon = "no decay" if s.memory_horizon is None else f"memory horizon {s.memory_horizon:.3g} steps"
        lines.append(f"‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ = {s.time_grad_ratio:.3g} at step {s.time_grad_step}, gain per step "
                     f"{_num(s.time_grad_gain)}, {horizon}")
    if s.verdict:
        lines.append(s.verdict)
    for d in s.diagnoses:
        label = "PROBLEM" if d["severity"] == "problem" else "note"
        lines.append(f"{label}: {d['kind']} ({d['rule']}): {d['message']}")
        for r in d["remedies"]:
            lines.append(f"  try: {r['label']}  {strict_json(r['changes'])}")
    return "\n".join(lines)


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def cmd_runs(args) -> int:
    runs = Store(args.db, create=False).list_runs()
    rows = [{"id": r.id, "created": r.created, "status": r.status, "steps_done": r.steps_done,
             "config": _summary_of(r), "pinned": r.pinned, "source": r.description.get("source", "lab"),
             "name": r.description.get("name")} for r in runs]
    if args.json:
        print(strict_json(rows))
        return 0
    if not rows:
        print("no runs stored yet; `python -m diagnostics train` makes one")
    for r in rows:
        pinned = "  (pinned)" if r["pinned"] else ""
        print(f"{r['id']:>5}  {r['created'][:19]}  {r['status']:<11} {r['steps_done']:>7} steps  {r['config']}{pinned}")
    return 0


def _summary_of(run) -> str:
    """A lab run's config in one line; a watched run's model (it has no config)."""
    try:
        if run.description.get("source") == "watch":
            return ModelDescription.from_dict(run.description).summary()
        return RunConfig.from_dict(run.config).summary()
    except (ConfigError, TypeError):  # a run stored by a newer version with fields this one does not know
        return strict_json(run.config or run.description)


def cmd_export(args) -> int:
    if args.format not in EXPORT_FORMATS:
        raise CliError(f"--format {args.format!r} is not valid; allowed: {', '.join(EXPORT_FORMATS)}")
    for path in Store(args.db, create=False).export(args.run_id, args.format, args.out):
        print(path)
    return 0


def cmd_delete(args) -> int:
    store = Store(args.db, create=False)
    store.get_run(args.run_id)  # a clear error for an unknown id
    store.delete(args.run_id)
    print(f"deleted run {args.run_id}")
    return 0


def cmd_pin(args) -> int:
    pinned = args.command == "pin"
    Store(args.db, create=False).pin(args.run_id, pinned)
    print(f"{'pinned' if pinned else 'unpinned'} run {args.run_id}")
    return 0


COMMANDS = {"train": cmd_train, "runs": cmd_runs, "export": cmd_export, "delete": cmd_delete, "pin": cmd_pin,
            "unpin": cmd_pin}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, StoreError, CliError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
