"""P9: what seeing inside a user's own recurrent model costs. `watch(every=10)` in a user's training loop ÷ the
same loop without it, beside the peers a practitioner would reach for, each ÷ the same plain loop:
`wandb.watch(log="all", log_freq=10)` (offline) and TensorBoard histograms of every parameter and gradient every
10 steps. Each pair runs in lock-step (one step of each in turn, `lockstep`), in several rounds; the report
gives the median ratio and the range over rounds.

The user's model is the issue's: nn.LSTM H=64 over T=50 steps of 32 features, batch 64, a linear head, MSE,
Adam, clipping at 1, one thread. Every loop calls `loss.item()` each step, as a loop that prints or logs does.
The peers come from `bench/requirements-peers.txt`; without them only `watch` is measured."""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from diagnostics import watch

from .lockstep import Loop, alternate
from .training import _result

H, T, B, FEATURES = 64, 50, 64, 32
EVERY = 10
PEERS = {"wandb": "wandb", "tensorboard": "tensorboard"}  # side -> the module it needs
TARGET = 1.10


class UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(FEATURES, H, batch_first=True)
        self.head = nn.Linear(H, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def user_loop(side: str, steps: int, folder: Path) -> Loop:
    """The user's loop with one way of seeing its gradients (`side`), or none ("plain")."""
    def loop(on_step):
        torch.manual_seed(0)
        model = UserModel()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        data = torch.Generator().manual_seed(1)
        w = writer = run = None
        if side == "watch":
            w = watch(model, every=EVERY, db=folder / "runs.sqlite", name="P9").__enter__()
        elif side == "wandb":
            import wandb
            run = wandb.init(mode="offline", dir=str(folder), project="p9")
            run.watch(model, log="all", log_freq=EVERY)
        elif side == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(folder / "tb"))
        try:
            for step in range(1, steps + 1):
                x = torch.randn(B, T, FEATURES, generator=data)
                loss = nn.functional.mse_loss(model(x), x[:, :5, 0].sum(1, keepdim=True))
                optimizer.zero_grad()
                loss.backward()
                if w is not None:
                    w.step(loss)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                value = loss.item()
                if run is not None:
                    run.log({"loss": value})
                if writer is not None and step % EVERY == 0:
                    writer.add_scalar("loss", value, step)
                    for name, p in model.named_parameters():
                        writer.add_histogram(name, p, step)
                        writer.add_histogram(f"{name}.grad", p.grad, step)
                optimizer.step()
                on_step(step)
        finally:
            if w is not None:
                w.__exit__(None, None, None)
            if run is not None:
                run.finish()
            if writer is not None:
                writer.close()
    return loop


def available() -> list[str]:
    return ["watch", *[side for side, module in PEERS.items() if importlib.util.find_spec(module) is not None]]


def peers_case(quick: bool) -> dict:
    rounds, warmup, measured = (1, 3, 20) if quick else (5, 20, 300)
    sides = available()
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peers' deprecation notices, not what is measured
        for side in sides:
            ratios, cpu, rows = [], [], []
            for _ in range(rounds):
                with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # wandb's files linger
                    a, b = alternate(user_loop(side, warmup + measured, Path(tmp)),
                                     user_loop("plain", warmup + measured, Path(tmp)))
                row = _result(a, b, warmup + 1, kind_a=lambda step: step % EVERY == 0)
                rows.append(row)
                ratios.append(row["ratio"])
                cpu.append(row["cpu_ratio"])
            results[side] = {"ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
                             "cpu_ratio": statistics.median(cpu),
                             "plain_ms": statistics.median(r["b_ms"] for r in rows),
                             "side_ms": statistics.median(r["a_ms"] for r in rows)}
    ours = results["watch"]["ratio"]
    peers = [results[s]["ratio"] for s in PEERS if s in results]
    return {"what": "watch(every=10) ÷ plain training of a user's nn.LSTM, beside wandb.watch and TensorBoard "
                    "histograms every 10 steps", "target": TARGET, "quick": quick, "rounds": rounds,
            "steps": measured, "missing_peers": [s for s in PEERS if s not in results], "results": results,
            "met": ours <= TARGET and len(peers) == len(PEERS) and all(ours < p for p in peers)}  # unmeasured: not


def table(case: dict) -> str:
    lines = [f"P9 {case['what']} (median of {case['rounds']} rounds of {case['steps']} steps; target ≤ "
             f"{case['target']} and below both peers: {'met' if case['met'] else 'NOT met'})"]
    for side, r in case["results"].items():
        lines.append(f"  {side:<12} {r['side_ms']:7.2f} ms ÷ plain {r['plain_ms']:7.2f} ms = {r['ratio']:.2f} "
                     f"(range {r['low']:.2f}–{r['high']:.2f}, CPU time {r['cpu_ratio']:.2f})")
    if case["missing_peers"]:
        lines.append(f"  not measured: {', '.join(case['missing_peers'])} "
                     "(pip install -r bench/requirements-peers.txt)")
    return "\n".join(lines)
