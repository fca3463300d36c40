"""A practitioner's model under `watch`: embedding → 2-layer bidirectional nn.LSTM → linear head.

The task is generated on the fly: a sequence of random tokens, and the target is how often token 3 occurs in it,
so the model must carry a count over the whole sequence to where the head reads it. SGD with momentum at the
default learning rate explodes without clipping (the loss passes 1e30 within 30 steps, then NaN) and learns
with it. Run it, then open the dashboard's Runs page:

    python examples/watch_lstm.py                  # 300 steps, clipped, recorded to runs/runs.sqlite
    python examples/watch_lstm.py --no-clip        # the same model without clipping: watch the NaNs arrive
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from diagnostics import watch  # noqa: E402

VOCAB = 16
COUNTED = 3  # the token whose occurrences are the target


class Classifier(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.lstm = nn.LSTM(32, hidden, num_layers=2, bidirectional=True, batch_first=True, dropout=0.1)
        self.head = nn.Linear(2 * hidden, 1)

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out[:, -1]).squeeze(-1)


def batch(generator: torch.Generator, size: int, length: int):
    tokens = torch.randint(0, VOCAB, (size, length), generator=generator)
    return tokens, (tokens == COUNTED).float().sum(1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="record per time step every N steps")
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--no-clip", action="store_true", help="train without gradient clipping")
    parser.add_argument("--db", default="runs/runs.sqlite", help="run store the dashboard reads")
    parser.add_argument("--name", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    model = Classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    criterion = nn.MSELoss()
    data = torch.Generator().manual_seed(args.seed)
    name = args.name or ("lstm-no-clip" if args.no_clip else "lstm-clipped")
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)

    with watch(model, every=args.every, db=args.db, name=name) as w:
        for step in range(1, args.steps + 1):
            tokens, labels = batch(data, 32, args.seq_len)
            loss = criterion(model(tokens), labels)
            optimizer.zero_grad()
            loss.backward()
            w.step(loss)  # before clipping, so the recorded norms are the gradients' own
            if not args.no_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % 50 == 0:
                print(f"step {step}: loss {loss.item():.4f}")
    s = w.summary
    print(f"run {w.run_id} in {args.db}: {s.status} after {s.steps_done} steps, largest gradient norm "
          f"{s.max_grad_norm:.3g}")
    if s.first_nonfinite:
        f = s.first_nonfinite
        where = [f"module {f['module']}"] + [f"{k.replace('_', ' ')} {f[k]}"
                                              for k in ("layer", "direction", "time_step") if f.get(k) is not None]
        print(f"first NaN/Inf at step {f['step']}: {f['tensor']} ({', '.join(where)})")
    print(s.verdict)  # the Lab shows it with the rest: python -m streamlit run dashboard.py, then Runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
