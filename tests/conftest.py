"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def restore_threads():
    """Put torch's thread count back after a test whose script sets it (--threads)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
