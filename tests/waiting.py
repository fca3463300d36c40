"""Waiting for a background run's state in tests, with a bound, instead of sleeping a guessed time."""

import time

import pytest


def wait_for(predicate, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail("condition not reached in time")
