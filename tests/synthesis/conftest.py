"""Synthesis tests use tiny tensors: one intra-op thread is fastest (and avoids oversubscribing
the shared cores, where spinning OpenMP threads make tiny convolutions 10× slower)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    torch.set_num_threads(1)
