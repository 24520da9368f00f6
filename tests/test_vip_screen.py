"""The "vipfast-screen" rule: SuccessModel's revisit weight against a float64 reference written from the
model's definition, the screen's keep statistics, its seeded draws, refills under the sampler, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from vipfast.allocators import VIPScreenAllocator, load_allocator, make_allocator
from vipfast.sampling import Outcomes, Prompts, make_sampler
from vipfast.success_model import SuccessModel

DIM = 4


def log_posterior(f, m, v, k, n):
    return k * -np.logaddexp(0.0, -f) + (n - k) * -np.logaddexp(0.0, f) - (f - m) ** 2 / (2 * v)


def reference_weight(m, v, k, n):
    """E[σ(f)(1 − σ(f))] under the Laplace posterior of N(m, v) times the binomial likelihood of (k, n)."""
    mode = optimize.minimize_scalar(lambda f: -log_posterior(f, m, v, k, n), bounds=(-40, 40), method="bounded",
                                    options={"xatol": 1e-11}).x
    p = 1 / (1 + np.exp(-mode))
    var = 1 / (n * p * (1 - p) + 1 / v)
    sd = np.sqrt(var)
    density = lambda f: np.exp(-0.5 * ((f - mode) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))  # noqa: E731
    sigmoid = lambda f: 1 / (1 + np.exp(-f))  # noqa: E731
    return integrate.quad(lambda f: sigmoid(f) * (1 - sigmoid(f)) * density(f), mode - 12 * sd, mode + 12 * sd,
                          epsabs=1e-14)[0]


@pytest.mark.parametrize("recalibrated", [False, True])
def test_revisit_weight_is_the_posterior_from_the_last_visits_prior_and_the_forgotten_counts(rng, recalibrated):
    prompt_var, forgetting = 1.7, 0.9
    model = SuccessModel(DIM, gp_options=dict(mode="exact", noise="binomial", lengthscale=0.8, signal_var=2.0),
                         prompt_var=prompt_var, fixed_prompt_var=True, forgetting=forgetting,
                         calibration_window=4 if recalibrated else 0)
    keys = np.arange(1, 41, dtype=np.uint64)
    x = rng.normal(size=(40, DIM))
    counts, cavity = {}, {}
    for _ in range(8):
        rows = rng.choice(36, 12, replace=False)  # the last four prompts are never observed
        trials = rng.integers(1, 9, 12)
        successes = rng.binomial(trials, 0.3).astype(float)
        prediction = model.predict(keys[rows], x[rows])
        model.observe(keys[rows], x[rows], successes, trials, prediction=prediction)
        model.advance()
        counts = {key: [forgetting * s, forgetting * n] for key, (s, n) in counts.items()}
        for i, row in enumerate(rows):
            old = counts.get(int(keys[row]), [0.0, 0.0])
            counts[int(keys[row])] = [old[0] + forgetting * successes[i], old[1] + forgetting * trials[i]]
            cavity[int(keys[row])] = (prediction.cavity_mean[i], prediction.cavity_var[i])
    model.use_calibration = recalibrated
    # the recalibration map is affine in the logit: N(m, V) -> N(a + b m, b² V)
    offset, scale = (model.calibration.offset, np.exp(model.calibration.log_scale)) if recalibrated else (0.0, 1.0)
    if recalibrated:
        assert abs(offset) > 1e-3 or abs(scale - 1) > 1e-3, (offset, scale)  # a map that moves the prior
    weight = model.revisit_weight(keys)
    for i, key in enumerate(keys.tolist()):
        if key not in cavity:
            assert np.isnan(weight[i]), (key, weight[i], rng.seed_for_message)
            continue
        m, v = cavity[key]
        k, n = counts[key]
        expected = reference_weight(offset + scale * m, scale**2 * (v + prompt_var), k, n)
        # the cavity is stored in float32: its rounding moves the weight by about 1e-7 relative
        np.testing.assert_allclose(weight[i], expected, rtol=2e-5, err_msg=rng.seed_for_message)


def test_revisit_weight_of_empty_and_unseen_batches():
    model = SuccessModel(DIM)
    assert model.revisit_weight(np.zeros(0, np.uint64)).shape == (0,)
    assert np.isnan(model.revisit_weight(np.array([3, 2**64 - 1], dtype=np.uint64))).all()
    with pytest.raises((TypeError, ValueError), match="keys"):
        model.revisit_weight(np.array([0.5, 1.5]))


def random_rewards(rng, rates, counts):
    return (rng.random(int(np.sum(counts))) < np.repeat(rates, counts)).astype(float)


def trained_screen(rng, seed=0, **options):
    """A screen that has seen 20 never-solved, 20 always-solved and 20 half-solved prompts 6 times each."""
    allocator = make_allocator("vipfast-screen", budget_per_prompt=8.0, min_rollouts=2, max_rollouts=16,
                               embedder=None, embedding_dim=DIM, screen_seed=seed, **options)
    keys = np.arange(60, dtype=np.uint64)
    rates = np.r_[np.zeros(20), np.ones(20), np.full(20, 0.5)]
    x = np.repeat(rng.normal(size=(3, DIM)), 20, axis=0) + 0.1 * rng.normal(size=(60, DIM))
    for _ in range(6):
        plan = allocator.plan(keys=keys, embeddings=x)
        allocator.update(plan, random_rewards(rng, rates, plan.counts))
    return allocator, keys, rates, x


def test_settled_prompts_are_kept_at_screen_keep_and_informative_ones_always(rng):
    """A screen that keeps everything, or skips informative prompts, or ignores screen_keep fails this."""
    # 0.15: far from both groups' weights (settled ≤ ~0.08 after six visits of 2+ rollouts, informative ~0.24)
    allocator, keys, rates, _ = trained_screen(rng, seed=20260201, screen_keep=0.2, screen_below=0.15)
    weight = allocator.predictor.revisit_weight(keys)
    assert (weight[:40] < allocator.screen_below).all() and (weight[40:] > allocator.screen_below).all(), weight
    tiled = np.tile(keys, 500)
    keep = allocator.screen(tiled)
    kept = np.bincount(tiled[keep].astype(np.int64), minlength=60)
    assert (kept[40:] == 500).all()
    assert stats.binomtest(int(kept[:40].sum()), 40 * 500, 0.2).pvalue > 1e-3, kept[:40].sum()
    assert allocator.stats()["skip_rate"] == pytest.approx(1 - keep.mean(), rel=1e-15)
    unseen = np.arange(1000, 1100, dtype=np.uint64)
    assert allocator.screen(unseen).all()


@pytest.mark.parametrize("settled_share", [0.2, 0.5, 0.8])
def test_the_screen_draws_one_uniform_per_prompt_from_its_seeded_generator(rng, settled_share):
    """Prompts of every success rate, screen_below at a quantile of their weights: which ones count as
    settled depends on it."""
    seed = int(rng.integers(2**32))
    allocator = make_allocator("vipfast-screen", budget_per_prompt=8.0, min_rollouts=2, max_rollouts=16,
                               embedder=None, embedding_dim=DIM, screen_seed=seed)
    keys, rates, x = np.arange(60, dtype=np.uint64), np.linspace(0, 1, 60), rng.normal(size=(60, DIM))
    for _ in range(6):
        plan = allocator.plan(keys=keys, embeddings=x)
        allocator.update(plan, random_rewards(rng, rates, plan.counts))
    allocator.screen_below = float(np.quantile(allocator.predictor.revisit_weight(keys), settled_share))
    stream = np.random.default_rng(seed)
    batch = rng.choice(np.r_[keys, np.arange(500, 510, dtype=np.uint64)], 200)
    for _ in range(3):
        settled = allocator.predictor.revisit_weight(batch) < allocator.screen_below
        expected = ~settled | (stream.random(len(batch)) < allocator.screen_keep)
        np.testing.assert_array_equal(allocator.screen(batch), expected, err_msg=rng.seed_for_message)


@pytest.mark.parametrize("embedding_dim", [None, DIM])
def test_a_screen_before_any_update_keeps_everything_and_still_draws(embedding_dim):
    allocator = VIPScreenAllocator(embedder=None, embedding_dim=embedding_dim, screen_seed=5)
    assert allocator.screen(np.arange(7, dtype=np.uint64)).all()
    assert allocator.screen_rng.random() == np.random.default_rng(5).random(8)[-1]
    assert allocator.stats()["skip_rate"] == 0.0


class ListSource:
    """Prompts 0, 1, 2, ... in order, keyed by index modulo 60, with their embeddings."""

    def __init__(self, x):
        self.next, self.x = 0, x

    def draw(self, count):
        ids = np.arange(self.next, self.next + count, dtype=np.int64)
        self.next += count
        return Prompts(ids=ids, keys=(ids % 60).astype(np.uint64), embeddings=self.x[ids % 60])


def test_under_the_sampler_each_step_keeps_its_budget_while_settled_prompts_are_skipped(rng):
    allocator, _, rates, x = trained_screen(rng, seed=3, screen_keep=0.05)
    source = ListSource(x)

    def generate(prompts, counts):
        rewards = random_rewards(rng, rates[prompts.keys.astype(np.int64)], counts)
        return Outcomes(rewards=rewards, tokens=np.zeros(len(rewards), dtype=np.int64))

    sampler, informative = make_sampler("single"), []
    for _ in range(10):
        batch = sampler.sample(allocator, source, generate, num_prompts=16)
        assert batch.complete and len(batch.prompts) == 16 and batch.generated_rollouts == 128
        informative.append(np.mean(batch.prompts.keys >= 40))
        batch.learn(allocator)
    # a third of the source is informative; the screen raises its share of the trained prompts
    assert np.mean(informative) > 0.7, (informative, rng.seed_for_message)


def test_resume_gives_identical_screens_and_plans(rng, tmp_path):
    allocator, keys, rates, x = trained_screen(rng, seed=11)
    for _ in range(3):  # the generator has moved: a restored one must continue from here, not from its seed
        allocator.screen(keys)
    allocator.save(tmp_path / "screen.npz")
    restored = load_allocator(tmp_path / "screen.npz", embedder=None)
    assert isinstance(restored, VIPScreenAllocator) and restored.screen_keep == allocator.screen_keep
    for _ in range(4):
        screens = [a.screen(keys) for a in (allocator, restored)]
        np.testing.assert_array_equal(*screens)
        plans = [a.plan(keys=keys[s], embeddings=x[s]) for a, s in zip((allocator, restored), screens)]
        np.testing.assert_array_equal(plans[0].counts, plans[1].counts)
        rewards = random_rewards(rng, rates[screens[0]], plans[0].counts)
        for a, plan in zip((allocator, restored), plans):
            a.update(plan, rewards)


@pytest.mark.parametrize(
    "entry, value, message",
    [("state/screen/rng", None, "screen entries"), ("state/screen/skip_rate", np.array(7.0), "skip_rate must be a share"),
     ("state/model/counts/column/successes", None, "must hold")],
)
def test_a_damaged_checkpoint_is_a_value_error(rng, tmp_path, entry, value, message):
    allocator, *_ = trained_screen(rng)
    allocator.save(tmp_path / "screen.npz")
    arrays = dict(np.load(tmp_path / "screen.npz"))
    if value is None:
        del arrays[entry]
    else:
        arrays[entry] = value
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=f"cannot restore.*{message}"):
        load_allocator(tmp_path / "bad.npz", embedder=None)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(screen_below=0.0), r"screen_below must be a number in \(0, 0.25\]"),
        (dict(screen_below=0.3), r"screen_below must be a number in \(0, 0.25\]"),
        (dict(screen_below=float("nan")), "screen_below must be a number in"),
        (dict(screen_below="0.1"), "screen_below must be a number in"),
        (dict(screen_below=np.array([0.1, 0.2])), "screen_below must be a number in"),
        (dict(screen_keep=-0.1), r"screen_keep must be a number in \[0, 1\]"),
        (dict(screen_keep=float("nan")), r"screen_keep must be a number in \[0, 1\]"),
        (dict(screen_keep=True), r"screen_keep must be a number in \[0, 1\]"),
        (dict(screen_seed=-1), "screen_seed must be a non-negative integer"),
        (dict(screen_seed=1.5), "screen_seed must be a non-negative integer"),
        (dict(screen_seed=True), "screen_seed must be a non-negative integer"),
        (dict(preset="gp"), "a screen needs the per-prompt evidence of the 'vipfast' preset"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        VIPScreenAllocator(embedder=None, embedding_dim=DIM, **options)
