"""Audio tests run torch on one thread: the tensors are small, and on a shared 2-core machine two
OpenMP threads that spin-wait on each other made these tests up to 20× slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
