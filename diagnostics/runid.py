"""Run ids as they arrive from links and the command line: text that must become a stored run's number."""

from __future__ import annotations

from .config import quoted

# SQLite keeps integers in 64 bits; ids are positive and counted from 1.
MAX_RUN_ID = 2**63 - 1


def parse_run_id(raw: object) -> int:
    """The run id a link or flag names, or a ValueError saying what is allowed. Only ASCII digits count:
    "²" is a digit to str.isdigit() but not to int(), and 10 000 digits would stall int() past Python's limit."""
    text = str(raw).strip().lstrip("#")
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_RUN_ID)) and 1 <= int(text) <= MAX_RUN_ID):
        raise ValueError(f"run {quoted(raw)} is not a run id: run ids are whole numbers from 1 to {MAX_RUN_ID}")
    return int(text)
