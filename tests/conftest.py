"""Fixtures shared by the modules that train many small runs."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """These matrices are tiny: a second thread only adds synchronisation, and on a loaded 2-core machine
    it made an 800-step run 10x slower (measured), so train on one and restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
