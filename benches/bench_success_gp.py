"""Success-probability GP: one training step, vipfast against exact-GP baselines, in one run.

    python -m pytest benches/bench_success_gp.py --benchmark-only --benchmark-json=benches/results/success_gp.json
    python benches/gp_memory.py benches/results/success_gp_memory.json
    python benches/report_success_gp.py benches/results/success_gp.json benches/results/success_gp_memory.json

Workload (tests/gp_reference.Workload): d = 384, Q = 512 prompts per step, 8192 distinct keys in
64 clusters, 8 rollouts each, success rates drifting. After 40 steps of history one step is
observe(Q) + advance() + predict (mean, var, weights) for the next Q; vipfast's observe takes back
the prediction that planned its rows. Every method sees the same steps, the same capacity-4096 LRU
store and the same lengthscale (vipfast's median heuristic).

Baselines: the float64 numpy/scipy exact GP (tests/gp_reference.ReferenceGP) refit from scratch
each step, and scikit-learn's GaussianProcessRegressor (fixed kernel, per-point alpha = s^2).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest

import vipfast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gp_reference import ReferenceGP, Workload, gh_expected_bernoulli_variance  # noqa: E402

DIM, Q, KEYS, HISTORY, CAPACITY = 384, 512, 8192, 40, 4096
FAST_ROUNDS = 60  # steps 41..100 after the history
SLOW_ROUNDS = 3

_workload = None


def workload() -> Workload:
    global _workload
    if _workload is None:
        _workload = Workload(num_keys=KEYS, dim=DIM, batch=Q)
    return _workload


def feed(model, steps):
    for t in steps:
        keys, x, _, trials, successes = workload().batch(t)
        model.observe(keys, x, successes, trials)
        model.advance()


def stepper(observe, advance, predict, start):
    """The benchmarked callable: each call is the next training step. An observe that takes the
    prediction of its rows gets the one the previous step made."""
    batches = [workload().batch(t) for t in range(start, start + FAST_ROUNDS + 3)]
    takes_prediction = "prediction" in inspect.signature(observe).parameters
    state = {"t": 0, "plan": None}

    def step():
        keys, x, _, trials, successes = batches[state["t"]]
        next_keys, next_x = batches[state["t"] + 1][:2]
        if takes_prediction:
            observe(keys, x, successes, trials, prediction=state["plan"])
        else:
            observe(keys, x, successes, trials)
        advance()
        state["plan"] = out = predict(next_keys, next_x)
        state["t"] += 1
        return out

    return step


def heuristic_lengthscale() -> float:
    gp = vipfast.SuccessGP(DIM, mode="fast")
    feed(gp, range(HISTORY))
    return gp.lengthscale


def record(benchmark, method, **info):
    benchmark.group = f"GP step: d={DIM}, Q={Q}, capacity {CAPACITY}, after {HISTORY} steps over {KEYS} keys"
    benchmark.extra_info.update(method=method, dim=DIM, prompts=Q, history=HISTORY, keys=KEYS, capacity=CAPACITY, **info)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_vipfast(benchmark, mode):
    gp = vipfast.SuccessGP(DIM, mode=mode, capacity=CAPACITY)
    feed(gp, range(HISTORY))
    rounds = FAST_ROUNDS if mode == "fast" else SLOW_ROUNDS
    step = stepper(gp.observe, gp.advance, gp.predict, HISTORY)
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1 if mode == "fast" else 0)
    info = dict(num_inducing=gp.num_inducing_used, lengthscale=gp.lengthscale, steps_run=gp.step)
    if mode == "fast":  # accuracy against exact on the same history, at the last step run
        exact = vipfast.SuccessGP(DIM, mode="exact", capacity=CAPACITY)
        feed(exact, range(gp.step))
        keys, x = workload().batch(gp.step)[:2]
        a, b = gp.predict(keys, x), exact.predict(keys, x)
        info.update(mean_abs_dp_vs_exact=float(np.abs(a.proba - b.proba).mean()),
                    max_abs_dp_vs_exact=float(np.abs(a.proba - b.proba).max()),
                    mean_abs_dw_vs_exact=float(np.abs(a.weight - b.weight).mean()),
                    mean_abs_dmean_vs_exact=float(np.abs(a.mean - b.mean).mean()),
                    var_ratio_vs_exact=float(np.mean(a.var / b.var)))
    record(benchmark, f"vipfast_{mode}", **info)


def numpy_predict(ref):
    def predict(keys, x):
        mean, var = ref.predict_latent(x)
        return mean, var, 1 / (1 + np.exp(-mean / np.sqrt(1 + np.pi * var / 8))), gh_expected_bernoulli_variance(mean, var)
    return predict


def test_numpy_refit(benchmark):
    ref = ReferenceGP(DIM, lengthscale=heuristic_lengthscale(), capacity=CAPACITY)
    feed(ref, range(HISTORY))
    step = stepper(ref.observe, ref.advance, numpy_predict(ref), HISTORY)
    mean = benchmark.pedantic(step, rounds=SLOW_ROUNDS, iterations=1)[0]
    exact = vipfast.SuccessGP(DIM, mode="exact", lengthscale=ref.lengthscale, capacity=CAPACITY)
    feed(exact, range(ref.step))
    keys, x = workload().batch(ref.step)[:2]
    record(benchmark, "numpy_refit", lengthscale=ref.lengthscale, stored=len(ref.store),
           max_rel_dmean_vs_vipfast_exact=float(np.max(np.abs(mean - exact.predict(keys, x).mean) / np.abs(mean))))


def test_sklearn_gpr(benchmark):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel

    ref = ReferenceGP(DIM, lengthscale=heuristic_lengthscale(), capacity=CAPACITY)  # the same store bookkeeping
    feed(ref, range(HISTORY))

    def predict(keys, x):
        xs, y, s2, _ = ref.pseudo_observations()
        mu0 = ref.prior_mean()
        kernel = ConstantKernel(1.0, "fixed") * RBF(ref.lengthscale, "fixed")
        model = GaussianProcessRegressor(kernel, alpha=s2, optimizer=None, normalize_y=False).fit(xs, y - mu0)
        xq = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
        mean, std = model.predict(xq, return_std=True)
        mean, var = mean + mu0, std**2
        return mean, var, 1 / (1 + np.exp(-mean / np.sqrt(1 + np.pi * var / 8))), gh_expected_bernoulli_variance(mean, var)

    step = stepper(ref.observe, ref.advance, predict, HISTORY)
    benchmark.pedantic(step, rounds=SLOW_ROUNDS, iterations=1)
    record(benchmark, "sklearn_gpr", lengthscale=ref.lengthscale, stored=len(ref.store))
