"""Shared pytest setup.

Without a GPU the Triton kernels run on CPU tensors in Triton's interpreter, which must be
switched on before triton or any kernel module is imported; conftest runs first.
"""

import os

try:
    import torch
except ImportError:  # the allocation tests need no torch
    torch = None

if torch is not None and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device")
