"""Shared pytest setup.

Without a GPU the Triton kernels run on CPU tensors in Triton's interpreter, which must be
switched on before triton or any kernel module is imported; conftest runs first.
"""

import os

import numpy as np
import pytest

try:
    import torch
except ImportError:  # the allocation tests need no torch
    torch = None

if torch is not None and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


class SeededRng:
    """A fresh Generator per test that remembers its seed for failure messages."""

    def __init__(self):
        seed = np.random.SeedSequence().entropy
        self._generator = np.random.default_rng(seed)
        self.seed_for_message = f"seed={seed}"

    def __getattr__(self, name):
        return getattr(self._generator, name)


@pytest.fixture
def rng():
    return SeededRng()
