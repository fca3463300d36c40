"""What one dashboard server allows its visitors, in one place: a public demo must share two cores fairly
among a class and bound what any link can cost. Each limit has an environment variable with which the server's
operator lifts or tightens it; the CLI on a user's own machine applies none of them (only the step budget).

Defaults suit the reference 2-core server with a class of thirty: lesson links are shared runs (one run per
experiment), so the slots go to visitors' own experiments, one at a time per address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _limit(env: str, default: float, help: str, unit: str = "", zero_lifts: bool = False):
    return field(default=default, metadata={"env": env, "help": help, "unit": unit, "zero_lifts": zero_lifts})


@dataclass(frozen=True)
class ServerLimits:
    """The dashboard's limits; `from_env` reads them from the environment variables named in each field."""

    max_runs: int = _limit("GFL_MAX_RUNS", 2, "runs training at once (one per core of the reference server)")
    max_waiting: int = _limit("GFL_MAX_WAITING", 20, "runs waiting for a slot; more are refused")
    training_per_address: int = _limit(
        "GFL_TRAINING_PER_ADDRESS", 1, "runs training at once for one client address; its other runs wait even if "
        "a slot is free, so one visitor with ten tabs holds one slot (a lesson's own runs do not count)",
        zero_lifts=True)
    live_per_address: int = _limit(
        "GFL_LIVE_PER_ADDRESS", 3, "runs training or waiting for one client address; more are refused (a "
        "lesson's own runs do not count)",
        zero_lifts=True)
    max_run_minutes: float = _limit(
        "GFL_MAX_RUN_MINUTES", 15.0, "a run's estimated training time", "min", zero_lifts=True)
    max_run_megabytes: float = _limit(
        "GFL_MAX_RUN_MB", 500.0, "a run's estimated size in the store", "MB", zero_lifts=True)
    store_megabytes: float = _limit(
        "GFL_STORE_MB", 2000.0, "the run store's size: to make room for a new run the oldest runs that are "
        "not pinned (lesson runs are) and not training are deleted", "MB", zero_lifts=True)
    abandoned_seconds: float = _limit(
        "GFL_ABANDONED_SECONDS", 30.0, "how long a run nobody watches keeps training before it is stopped", "s")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerLimits:
        """The defaults with every variable that is set applied; a value that is not a number is refused."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"], "").strip()
            if not raw:
                continue
            kind = int if f.type in ("int", int) else float
            lowest = 0 if f.metadata["zero_lifts"] else (1 if kind is int else 1e-9)
            try:
                value = kind(raw)
            except ValueError:
                value = None
            if value is None or value != value or value < lowest:
                allowed = "a whole number" if kind is int else "a number"
                lift = " (0 lifts the limit)" if f.metadata["zero_lifts"] else ""
                raise ValueError(f"{f.metadata['env']}={raw[:40]!r} is not valid: {f.metadata['help']} must be "
                                 f"{allowed} of at least {lowest:g}{lift}")
            values[f.name] = value
        return cls(**values)

    def lifted(self, name: str) -> bool:
        """Whether the operator switched this limit off (0)."""
        meta = next(f.metadata for f in dataclasses.fields(self) if f.name == name)
        return meta["zero_lifts"] and getattr(self, name) == 0


# Behind a reverse proxy every visitor arrives from the proxy's address, so the per-address limits would treat a
# whole class as one visitor. The operator names the header their proxy sets (e.g. X-Forwarded-For); it is read
# only then, since any visitor can send that header to a server that is not behind such a proxy.
FORWARDED_HEADER_ENV = "GFL_FORWARDED_HEADER"


def client_address(peer: str | None, headers: Mapping[str, str], environ: Mapping[str, str] | None = None
                   ) -> str | None:
    """The visitor's address for the per-address limits: the last address in the operator's forwarding header
    (the one their proxy appended; earlier ones the visitor may have written), else the connection's peer."""
    environ = os.environ if environ is None else environ
    header = environ.get(FORWARDED_HEADER_ENV, "").strip()
    if header:
        # Every line of the header: a proxy may add its own line after one the visitor wrote.
        lines = (headers.get_all(header) if hasattr(headers, "get_all") else
                 [v for k, v in headers.items() if k.lower() == header.lower()])
        last = ",".join(lines).split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass  # missing or not an address: the peer is all we know
    return peer
