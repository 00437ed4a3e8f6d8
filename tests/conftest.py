"""Shared test setup: every test runs with one torch thread and gets the previous count back afterwards.

Tiny models on a shared 2-core host run several times faster single-threaded (no oversubscription), and a
test that changes the thread count (tests/test_threads.py) cannot leak it into the next test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
