"""Float64 numpy references for the success-probability GP, and the synthetic workload.

`ReferenceGP` re-implements the model of docs/success_gp.md independently of the C++ core:
its own key store (an OrderedDict in recency order), its own pseudo-observations from the
forgotten counts, and the textbook posterior through chol(K + S) (Rasmussen & Williams
Alg. 2.1), where the core uses the B = I + T^1/2 K T^1/2 form. Tests compare the two; the
benchmark uses it as the "numpy/scipy exact GP refit per step" baseline.

`Workload` is the synthetic training run of the tests and the benchmark: prompts in clusters
of the embedding space that share a success rate, rates drifting over steps, each key drawn
rarely (Q of `num_keys` per step).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import scipy.integrate
import scipy.linalg
import scipy.special


def normalise(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rbf(a, b, lengthscale, signal_var):
    """signal_var * exp(-|a - b|^2 / (2 l^2)) with the squared distance taken directly."""
    sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) if a.shape[0] * b.shape[0] * a.shape[1] <= 2**24 else (
        np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0))
    return signal_var * np.exp(-sq / (2.0 * lengthscale**2))


LAPLACE_TRUST_REGION = 2.0  # standard errors of the binomial target the linearisation point may stray
RELINEARISATION_TOLERANCE = 0.5  # logits between a site's linearisation point and the mean it is kept at


def pseudo_observation(k, n, noise="binomial", jitter=0.0, clip=0.01, linearisation=None):
    """y, s^2 for forgotten counts: the binomial pseudo-observation logit((k+1/2)/(n+1)), the VIP code's
    'fixed' clipped rate, or the binomial likelihood's Newton ('laplace') site at `linearisation`."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if noise in ("binomial", "laplace"):
        p = (k + 0.5) / (n + 1.0)
        y, s2 = np.log(p / (1 - p)), 1.0 / ((n + 1.0) * p * (1 - p))
        if noise == "binomial":
            return y, s2 + jitter
        reach = LAPLACE_TRUST_REGION * np.sqrt(s2)
        f = np.clip(linearisation, np.where(k > 0, y - reach, -np.inf), np.where(k < n, y + reach, np.inf))
        p = 1.0 / (1.0 + np.exp(-f))
        w = n * p * (1 - p)
        return f + (k - n * p) / w, 1.0 / w + jitter
    p = np.clip(k / n, clip, 1 - clip)
    return np.log(p / (1 - p)), np.full_like(p, jitter)


def expected_bernoulli_variance_reference(mean, var):
    """E[sigmoid(f)(1 - sigmoid(f))], f ~ N(mean, var), elementwise, by scipy's adaptive quadrature of the definition."""
    mean, var = np.broadcast_arrays(np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64))
    out = np.empty(mean.shape)
    for index in np.ndindex(mean.shape):
        m, v = mean[index], var[index]
        if v <= 0:
            out[index] = scipy.special.expit(m) * scipy.special.expit(-m)
            continue
        sd = np.sqrt(v)
        # in the standard score z = (f - m) / sd, so a narrow posterior is as easy as a wide one
        integrand = lambda z: (scipy.special.expit(m + sd * z) * scipy.special.expit(-m - sd * z)  # noqa: E731
                               * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi))
        centre = -m / sd  # where f = 0: the logistic bump
        points = [centre] if abs(centre) < 14 else None
        out[index] = scipy.integrate.quad(integrand, -14.0, 14.0, points=points, epsabs=0, epsrel=1e-12,
                                          limit=800)[0]
    return out


class ReferenceGP:
    """Exact GP on the stored keys, refit from scratch at every prediction."""

    def __init__(self, dim, *, lengthscale, signal_var=1.0, prior_mean=None, forgetting=0.95, capacity=4096,
                 noise="binomial", jitter=0.0, clip=0.01):
        self.dim, self.lengthscale, self.signal_var = dim, lengthscale, signal_var
        self.fixed_prior_mean, self.forgetting, self.capacity = prior_mean, forgetting, capacity
        self.noise, self.jitter, self.clip = noise, jitter, clip
        self.step = 0
        # key -> [embedding, k, n, observed step, linearisation point (laplace)]
        self.store: OrderedDict[int, list] = OrderedDict()

    def observe(self, keys, embeddings, successes, trials):
        if self.noise == "laplace" and len(keys) and self.store:  # as the core: no rows, no Newton step
            self.relinearise()
        new_key_linearisation = self.prior_mean()
        merged: dict[int, list] = {}
        for key, x, k, n in zip(np.asarray(keys).tolist(), normalise(embeddings), successes, trials):
            entry = merged.setdefault(int(key), [None, 0.0, 0.0])
            entry[0], entry[1], entry[2] = x, entry[1] + float(k), entry[2] + float(n)
        for key, (x, k, n) in merged.items():
            if n == 0:
                continue
            linearisation = new_key_linearisation
            if key in self.store:
                _, k_old, n_old, t, linearisation = self.store.pop(key)
                g = self.forgetting ** (self.step - t)
                k, n = g * k_old + k, g * n_old + n
            elif len(self.store) == self.capacity:
                self.store.popitem(last=False)
            self.store[key] = [x, k, n, self.step, linearisation]

    def relinearise(self):
        """One Newton step, taken before a batch is added: sites more than the tolerance from the
        posterior mean move to it."""
        entries = list(self.store.values())
        mean, _ = self.predict_latent(np.array([entry[0] for entry in entries]))
        for entry, f in zip(entries, mean):
            if abs(f - entry[4]) > RELINEARISATION_TOLERANCE:
                entry[4] = f

    def advance(self, steps=1):
        self.step += steps

    def pseudo_observations(self):
        xs, ks, ns, ts, lin = zip(*self.store.values())
        y, s2 = pseudo_observation(ks, ns, self.noise, self.jitter, self.clip, np.asarray(lin))
        weight = self.forgetting ** (self.step - np.asarray(ts, dtype=np.float64))
        return np.asarray(xs), y, s2 / weight, weight

    def prior_mean(self):
        if self.fixed_prior_mean is not None:
            return self.fixed_prior_mean
        if not self.store:
            return 0.0
        _, y, _, weight = self.pseudo_observations()
        return float(weight @ y / weight.sum())

    def predict_latent(self, embeddings):
        xq = normalise(embeddings)
        mu0 = self.prior_mean()
        if not self.store:
            return np.full(len(xq), mu0), np.full(len(xq), self.signal_var)
        x, y, s2, _ = self.pseudo_observations()
        k = rbf(x, x, self.lengthscale, self.signal_var) + np.diag(s2)
        factor = scipy.linalg.cho_factor(k, lower=True)
        kq = rbf(xq, x, self.lengthscale, self.signal_var)
        mean = mu0 + kq @ scipy.linalg.cho_solve(factor, y - mu0)
        v = scipy.linalg.solve_triangular(factor[0], kq.T, lower=True)
        return mean, self.signal_var - (v * v).sum(0)


class Workload:
    """Clustered prompts with drifting success rates; `batch(t)` is step t's prompts.

    Embeddings: unit vectors a*g + b*c_cluster + e*noise (a shared direction as real sentence
    embeddings have, cos ~ 0.6 within a cluster and ~ 0.1 across). Success logits: a per-cluster
    level that drifts (trend + random walk) plus a small per-prompt offset.
    """

    def __init__(self, num_keys=8192, dim=384, clusters=64, batch=512, rollouts=8, seed=0, drift=0.03,
                 walk=0.08, offset=0.3, keep_history=True):
        rng = np.random.default_rng(seed)
        self.num_keys, self.dim, self.batch_size, self.rollouts = num_keys, dim, batch, rollouts
        self.keys = np.unique(rng.integers(0, np.iinfo(np.uint64).max, size=2 * num_keys, dtype=np.uint64, endpoint=True))
        self.keys = rng.permutation(self.keys)[:num_keys]  # arbitrary 64-bit hashes, high bit included
        shared = normalise(rng.normal(size=(1, dim)))
        centres = normalise(rng.normal(size=(clusters, dim)))
        self.cluster = rng.integers(clusters, size=num_keys)
        noise = normalise(rng.normal(size=(num_keys, dim)))
        x = np.sqrt(0.1) * shared + np.sqrt(0.5) * centres[self.cluster] + np.sqrt(0.4) * noise
        self.embeddings = normalise(x).astype(np.float32)
        self.level0 = rng.normal(-0.3, 1.5, size=clusters)
        self.offset = rng.normal(0.0, offset, size=num_keys)
        self.drift, self.walk, self.clusters = drift, walk, clusters
        self._levels = [self.level0.copy()]
        self._first = 0  # step of self._levels[0]; without history only the latest level is kept
        self._keep_history = keep_history
        self._rng = np.random.default_rng(seed + 1)
        self._walk_rng = np.random.default_rng(seed + 2)

    def level(self, t):
        if t < self._first:
            raise ValueError(f"step {t} was forgotten (keep_history=False)")
        while self._first + len(self._levels) <= t:
            step = self.drift + self.walk * self._walk_rng.normal(size=self.clusters)
            self._levels.append(self._levels[-1] + step)
            if not self._keep_history:
                self._levels.pop(0)
                self._first += 1
        return self._levels[t - self._first]

    def success_prob(self, t, index):
        return 1.0 / (1.0 + np.exp(-(self.level(t)[self.cluster[index]] + self.offset[index])))

    def batch(self, t):
        """(keys, embeddings, true success probabilities, trials, successes) of step t."""
        rng = np.random.default_rng([t, 12345])
        index = rng.choice(self.num_keys, size=self.batch_size, replace=False)
        p = self.success_prob(t, index)
        trials = np.full(self.batch_size, self.rollouts, dtype=np.int64)
        successes = rng.binomial(trials, p)
        return self.keys[index], self.embeddings[index], p, trials, successes


def assert_same_predictions(a, b, keys, x):
    """Two SuccessGPs predict the same bits (mean, var, p-hat, weight) for these rows."""
    for left, right in zip(a.predict(keys, x), b.predict(keys, x)):
        np.testing.assert_array_equal(left, right)
