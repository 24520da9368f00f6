"""The hand-written AVX2 kernels against the portable paths they replace.

Each case runs twice in fresh processes, once with VIPFAST_DISABLE_AVX2=1 (the portable paths: Eigen's
products, the solver's scalar pass) and once without; the GP's predictions must agree to rounding and the
allocations exactly. On a CPU without AVX2 and FMA there is only the portable path and nothing to compare.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import vipfast

    seed, out = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(seed)
    results = {}
    for dim, inducing, batch in [(37, 10, 50), (384, 128, 301)]:
        gp = vipfast.SuccessGP(dim, mode="fast", num_inducing=inducing, capacity=600)
        keys = rng.integers(0, 2**63, size=900, dtype=np.uint64)
        x = rng.normal(size=(900, dim))
        for step in range(4):
            rows = rng.choice(900, batch, replace=False)
            trials = rng.integers(1, 9, batch)
            gp.observe(keys[rows], x[rows], rng.binomial(trials, 0.4).astype(float), trials)
            gp.advance()
        prediction = gp.predict(keys[:batch], x[:batch])
        results[f"gp{dim}"] = np.stack([prediction.mean, prediction.var])
        results[f"lengthscale{dim}"] = np.array(gp.lengthscale)
    for estimator in vipfast.ESTIMATORS:
        weights = rng.uniform(0, 0.25, 4099) * (rng.random(4099) < 0.9)
        results[f"allocate_{estimator}"] = vipfast.allocate(weights, 8 * 4099, min_rollouts=3, max_rollouts=32,
                                                            estimator=estimator)
    np.savez(out, **results)
""")


def _cpu_has_avx2_and_fma() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx2" in flags and "fma" in flags


def _run(seed: int, path: Path, disable: bool) -> dict[str, np.ndarray]:
    env = dict(os.environ)
    env.pop("VIPFAST_DISABLE_AVX2", None)
    if disable:
        env["VIPFAST_DISABLE_AVX2"] = "1"
    subprocess.run([sys.executable, "-c", SCRIPT, str(seed), str(path)], env=env, cwd=path.parent, check=True, timeout=300)
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


@pytest.mark.skipif(not _cpu_has_avx2_and_fma(), reason="a CPU without AVX2 and FMA runs the portable paths only")
def test_the_avx2_kernels_agree_with_the_portable_paths(rng, tmp_path):
    seed = int(rng.integers(2**31))
    kernels = _run(seed, tmp_path / "kernels.npz", disable=False)
    portable = _run(seed, tmp_path / "portable.npz", disable=True)
    for name, value in portable.items():
        if name.startswith("allocate_"):
            np.testing.assert_array_equal(kernels[name], value, err_msg=f"{name} {rng.seed_for_message}")
        else:
            np.testing.assert_allclose(kernels[name], value, rtol=1e-9, atol=1e-12, err_msg=f"{name} {rng.seed_for_message}")
