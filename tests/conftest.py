"""Shared fixtures of the unit tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Small tensors run far faster on one thread when the machine's cores are busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
