"""Shared pytest setup.

- The tests run against the installed package: importing the unbuilt source tree stops the run with
  one line saying to `pip install .` first.
- Without a GPU the Triton kernels run on CPU tensors in Triton's interpreter, which must be
  switched on before triton or any kernel module is imported; conftest runs first.
- `rng`: a seeded numpy Generator per test; a failing test's report shows its seed, and
  VIPFAST_TEST_SEED=<seed> replays it.
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
    try:
        import vipfast  # noqa: F401
    except ImportError as error:
        pytest.exit(f"vipfast is not importable ({error}); run `pip install .` before pytest", returncode=4)


class SeededRng:
    """A numpy Generator that remembers its seed for failure reports."""

    def __init__(self, seed: int):
        self.seed = seed
        self._generator = np.random.default_rng(seed)
        self.seed_for_message = f"seed={seed} (replay: VIPFAST_TEST_SEED={seed})"

    def __getattr__(self, name):
        return getattr(self._generator, name)


@pytest.fixture
def rng(request):
    replay = os.environ.get("VIPFAST_TEST_SEED")
    seed = int(replay) if replay else int(np.random.SeedSequence().entropy % 2**63)
    generator = SeededRng(seed)
    request.node.stash[_SEED] = generator.seed_for_message
    return generator


_SEED = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and _SEED in item.stash:
        report.sections.append(("rng", item.stash[_SEED]))
    return report
