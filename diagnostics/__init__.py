"""Gradient Flow Lab's library. `from diagnostics import watch` records a user's own model (see `watching`).

Names are loaded on first use: importing one submodule (the CLI's, the dashboard's) does not load them all."""

import importlib

_LAZY = {"watch": "watching", "Watch": "watching", "WatchError": "watching"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'diagnostics' has no attribute {name!r}")
