"""Sampling modes (vipfast.sampling): budget accounting, grouping, stopping rules, allocator feedback, estimators.

A fake source (a numpy pool of prompts with known success probabilities) and a fake generate (Bernoulli
draws, random token counts) stand in for a dataset and an LLM; the allocators are the real ones.
"""

import itertools
import math

import numpy as np
import pytest

import vipfast
from vipfast.allocation import allocation_objective
from vipfast.allocators import AllocatorBase
from vipfast.allocators.base import Weighing
from vipfast.sampling import (
    Outcomes,
    Prompts,
    balanced_downsample,
    exits,
    extra_rollouts,
    informative_groups,
    make_sampler,
    max_variance_selection,
    sampler_names,
)

MODES = ("dynamic", "reinforce_ada", "pods", "vip_rounds")
ALLOCATORS = ("uniform", "vipfast", "beta", "coba", "greso")
DIM = 8


# -- fakes --------------------------------------------------------------------------------------------------------

class PromptPool:
    """A PromptSource over prompts 0..P-1 with success probabilities `p`, drawn in a fixed shuffled cycle."""

    def __init__(self, p, rng, order=None):
        self.p = np.asarray(p, dtype=np.float64)
        self.embeddings = rng.normal(size=(len(self.p), DIM)).astype(np.float32)
        self.order = np.arange(len(self.p)) if order is None else np.asarray(order)
        self.position = 0
        self.drawn = []

    def draw(self, count):
        ids = self.order[np.arange(self.position, self.position + count) % len(self.order)].astype(np.int64)
        self.position += count
        self.drawn.append(ids)
        return Prompts(ids=ids, keys=(ids + 1000).astype(np.uint64), embeddings=self.embeddings[ids])


class FakeGenerate:
    """Bernoulli(p[id]) successes; rewards 0.25 + 0.5·success + number·1e-7 encode each rollout's number when
    `encode`, else 0/1. Logs every call, every reward and the prompt of every rollout."""

    def __init__(self, p, rng, encode=False):
        self.p, self.rng, self.encode = np.asarray(p, dtype=np.float64), rng, encode
        self.calls, self.rewards, self.tokens, self.prompt_of = [], [], [], []

    def __call__(self, prompts, counts):
        counts = np.asarray(counts)
        assert counts.ndim == 1 and len(counts) == len(prompts) and counts.min() >= 1, counts
        ids = np.repeat(prompts.ids, counts)
        success = (self.rng.random(len(ids)) < self.p[ids]).astype(np.float64)
        numbers = np.arange(self.total, self.total + len(ids))
        rewards = 0.25 + 0.5 * success + numbers * 1e-7 if self.encode else success
        tokens = self.rng.integers(1, 200, len(ids))
        self.calls.append((prompts.ids.copy(), counts.copy()))
        self.rewards += rewards.tolist()
        self.tokens += tokens.tolist()
        self.prompt_of += ids.tolist()
        return Outcomes(rewards=rewards, tokens=tokens)

    @property
    def total(self):
        return len(self.rewards)


def decode(rewards):
    rewards = np.asarray(rewards)
    return np.round((rewards - 0.25 - 0.5 * (rewards > 0.5)) * 1e7).astype(np.int64)


class ScriptedGenerate:
    """Each prompt id returns the next rewards of its script, in order."""

    def __init__(self, scripts):
        self.queues = {key: list(values) for key, values in scripts.items()}
        self.calls = []

    def __call__(self, prompts, counts):
        self.calls.append((prompts.ids.copy(), np.asarray(counts).copy()))
        rewards = [self.queues[int(i)].pop(0) for i, c in zip(prompts.ids, counts) for _ in range(int(c))]
        return Outcomes(rewards=np.array(rewards, dtype=np.float64), tokens=np.ones(len(rewards), dtype=np.int64))


class Spy:
    """Wraps an allocator and records every plan and update made through it."""

    def __init__(self, inner):
        self.inner = inner
        self.events = []

    def plan(self, *args, **kwargs):
        plan = self.inner.plan(*args, **kwargs)
        self.events.append(("plan", plan))
        return plan

    def update(self, plan, rewards, group_sizes=None, *, ends_step=True):
        sizes = None if group_sizes is None else np.array(group_sizes)
        self.events.append(("update", (plan, np.array(rewards), sizes)))
        self.inner.update(plan, rewards, group_sizes, ends_step=ends_step)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def updates(self):
        return [value for kind, value in self.events if kind == "update"]


def make_allocator(name, **options):
    options = dict(budget_per_prompt=6.0, min_rollouts=2, max_rollouts=12, **options)
    if name == "vipfast":
        options.update(embedder=None)
    return vipfast.make_allocator(name, **options)


def population(rng, size=64):
    return rng.choice([0.0, 1.0, 0.1, 0.5, 0.9], size)


def run(mode, allocator_name, rng, *, num_prompts=8, encode=True, options=None, **allocator_options):
    p = population(rng)
    source, generate = PromptPool(p, rng), FakeGenerate(p, rng, encode=encode)
    allocator = Spy(make_allocator(allocator_name, **allocator_options))
    batch = make_sampler(mode, **(options or {})).sample(allocator, source, generate, num_prompts)
    return batch, allocator, source, generate


# -- registry, options, validation ---------------------------------------------------------------------------------

NON_DEFAULT = {
    "dynamic": dict(oversample=1.5, max_rounds=3, max_draws=2.0),
    "reinforce_ada": dict(exit_rule="positive", rounds=3, per_round=4, group_size=6, threshold=0.5, baseline="group",
                          unresolved="keep", max_draws=3.0),
    "pods": dict(keep=3, max_draws=4.0),
    "vip_rounds": dict(first_fraction=0.25, groups="round", max_draws=5.0),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_registered_and_its_options_recreate_it(mode):
    assert mode in sampler_names()
    sampler = make_sampler(mode, **NON_DEFAULT[mode])
    assert sampler.name == mode
    assert sampler.options() == NON_DEFAULT[mode]
    again = make_sampler(mode, **sampler.options())
    assert type(again) is type(sampler) and again.options() == sampler.options()
    assert make_sampler(mode, **make_sampler(mode).options()).options() == make_sampler(mode).options()


BAD_OPTIONS = [
    ("dynamic", "oversample", 0.5), ("dynamic", "oversample", math.inf), ("dynamic", "oversample", "3"),
    ("dynamic", "max_rounds", 0), ("dynamic", "max_rounds", 2.0), ("dynamic", "max_draws", 0.5),
    ("reinforce_ada", "exit_rule", "pos"), ("reinforce_ada", "rounds", 0), ("reinforce_ada", "per_round", -1),
    ("reinforce_ada", "group_size", 1), ("reinforce_ada", "threshold", math.nan), ("reinforce_ada", "baseline", "mean"),
    ("reinforce_ada", "unresolved", "drop"), ("reinforce_ada", "rounds", True),
    ("pods", "keep", 1), ("pods", "keep", 4.5), ("pods", "keep", None),
    ("vip_rounds", "first_fraction", 0.0), ("vip_rounds", "first_fraction", 1.5), ("vip_rounds", "groups", "rounds"),
]


@pytest.mark.parametrize("mode,option,value", BAD_OPTIONS, ids=[f"{m}-{o}-{v!r}" for m, o, v in BAD_OPTIONS])
def test_bad_options_raise_naming_the_value(mode, option, value):
    with pytest.raises(ValueError, match=option) as error:
        make_sampler(mode, **{option: value})
    assert repr(value) in str(error.value) or str(value) in str(error.value)


@pytest.mark.parametrize("mode", MODES)
def test_unknown_options_and_bad_num_prompts_are_refused(mode, rng):
    with pytest.raises(TypeError, match="bogus"):
        make_sampler(mode, bogus=1)
    source, generate = PromptPool([0.5] * 4, rng), FakeGenerate([0.5] * 4, rng)
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="num_prompts"):
            make_sampler(mode).sample(make_allocator("uniform"), source, generate, bad)


# -- invariants every mode keeps -------------------------------------------------------------------------------------

def check_batch_invariants(batch, generate, source):
    """Accounting and grouping that hold for every mode, checked against the fakes' logs."""
    requested = sum(int(counts.sum()) for _, counts in generate.calls)
    assert batch.generated_rollouts == requested == generate.total
    assert batch.generated_tokens == sum(generate.tokens)
    assert batch.rounds == len(generate.calls)
    assert batch.prompts_drawn == sum(len(ids) for ids in source.drawn)
    sizes = batch.group_sizes
    assert sizes.dtype == np.int64 and (sizes >= 1).all() and int(sizes.sum()) == len(batch.rollouts)
    assert len(batch.rewards) == len(batch.trained) == len(batch.rollouts) and batch.trained.dtype == bool
    assert len(batch.group_prompt) == len(sizes) and batch.group_prompt.max(initial=-1) < len(batch.prompts)
    assert len(np.unique(batch.rollouts)) == len(batch.rollouts), "a rollout sits in two groups"
    np.testing.assert_array_equal(decode(batch.rewards), batch.rollouts)
    np.testing.assert_array_equal(batch.rewards, np.asarray(generate.rewards)[batch.rollouts])
    owner = np.repeat(batch.prompts.ids[batch.group_prompt], sizes)
    np.testing.assert_array_equal(np.asarray(generate.prompt_of)[batch.rollouts], owner)
    assert batch.trained_rollouts == int(batch.trained.sum())


def learned_rollout_numbers(allocator):
    """Rollout numbers (decoded from rewards) of every update, in-step or pending, with multiplicity."""
    numbers = []
    for plan, rewards, sizes in allocator.updates:
        sizes = plan.counts if sizes is None else sizes
        assert len(sizes) == len(plan) and int(sizes.sum()) == len(rewards)
        numbers += decode(rewards).tolist()
    return sorted(numbers)


@pytest.mark.parametrize("allocator_name", ALLOCATORS)
@pytest.mark.parametrize("mode", MODES)
def test_accounting_grouping_and_allocator_feedback(mode, allocator_name, rng):
    batch, allocator, source, generate = run(mode, allocator_name, rng)
    check_batch_invariants(batch, generate, source)
    assert batch.complete and len(batch.prompts) == 8
    batch.learn(allocator)
    assert batch.pending == []
    assert learned_rollout_numbers(allocator) == list(range(generate.total)), "each rollout is learned exactly once"


@pytest.mark.parametrize("mode", MODES)
def test_pending_observations_belong_to_the_prompts_they_name(mode, rng):
    batch, allocator, source, generate = run(mode, "beta", rng)
    batch.learn(allocator)
    prompt_of = np.asarray(generate.prompt_of)
    for plan, rewards, sizes in allocator.updates:
        owners = np.repeat(plan.keys.astype(np.int64) - 1000, sizes)
        np.testing.assert_array_equal(prompt_of[decode(rewards)], owners)


@pytest.mark.parametrize("mode", MODES)
def test_same_seeds_give_the_same_batch(mode):
    batches = []
    for _ in range(2):
        rng = np.random.default_rng(7)
        batches.append(run(mode, "vipfast", rng, encode=False)[0])
    first, second = batches
    for name in ("group_prompt", "group_sizes", "rollouts", "rewards", "trained"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    np.testing.assert_array_equal(first.prompts.ids, second.prompts.ids)
    assert (first.generated_rollouts, first.generated_tokens, first.rounds) == (
        second.generated_rollouts, second.generated_tokens, second.rounds)


class EmptySource:
    def draw(self, count):
        return Prompts(ids=np.empty(0, dtype=np.int64), keys=np.empty(0, dtype=np.uint64),
                       embeddings=np.empty((0, DIM), dtype=np.float32))


@pytest.mark.parametrize("mode", MODES)
def test_a_dry_source_gives_an_empty_incomplete_batch(mode, rng):
    generate = FakeGenerate([0.5], rng)
    batch = make_sampler(mode).sample(make_allocator("uniform"), EmptySource(), generate, 4)
    assert not batch.complete and len(batch.prompts) == 0 and len(batch.rollouts) == 0
    assert batch.generated_rollouts == batch.rounds == 0 and generate.calls == []


@pytest.mark.parametrize("mode", MODES)
def test_broken_generate_outputs_are_refused(mode, rng):
    source = PromptPool([0.5] * 8, rng)

    def short(prompts, counts):
        return Outcomes(rewards=np.zeros(int(np.sum(counts)) - 1), tokens=np.zeros(int(np.sum(counts)) - 1))

    def nan(prompts, counts):
        rewards = np.zeros(int(np.sum(counts)))
        rewards[1] = np.nan
        return Outcomes(rewards=rewards, tokens=np.zeros(len(rewards), dtype=np.int64))

    with pytest.raises(ValueError, match="requested"):
        make_sampler(mode).sample(make_allocator("uniform"), source, short, 4)
    with pytest.raises(ValueError, match="nan"):
        make_sampler(mode).sample(make_allocator("uniform"), source, nan, 4)


# -- dynamic -------------------------------------------------------------------------------------------------------

def test_informative_groups_compares_values_not_a_rounded_std():
    assert np.std([0.1] * 3) > 0  # the trap: a floating-point std of a constant group
    rewards = np.array([0.1, 0.1, 0.1, 0.3, 0.5, 1, 1, 0, 0, 0.7, 0.7, 0.7000001, 5])
    np.testing.assert_array_equal(informative_groups(rewards, [3, 2, 2, 2, 0, 3, 1]),
                                  [False, True, False, False, False, True, False])


def test_dynamic_drops_all_equal_groups_and_keeps_the_first_informative_in_draw_order():
    scripts = {0: [0.1] * 3, 1: [0.3, 0.5, 0.5], 2: [1.0] * 3, 3: [0.0] * 3, 4: [0.2, 0.2, 0.9], 5: [0.7] * 3,
               6: [0.0, 1.0, 1.0], 7: [0.4, 0.0, 0.0]}
    generate = ScriptedGenerate(scripts)
    source = PromptPool(np.zeros(8), np.random.default_rng(0))
    allocator = Spy(vipfast.make_allocator("uniform", budget_per_prompt=3, min_rollouts=2, max_rollouts=3))
    batch = make_sampler("dynamic", oversample=3.0).sample(allocator, source, generate, 2)
    # round 1 draws ceil(3 * 2) = 6 prompts, 1 and 4 are informative: done in one round
    np.testing.assert_array_equal(source.drawn[0], np.arange(6))
    assert batch.complete and batch.rounds == 1
    np.testing.assert_array_equal(batch.prompts.ids, [1, 4])
    np.testing.assert_array_equal(batch.rewards, [0.3, 0.5, 0.5, 0.2, 0.2, 0.9])
    assert batch.generated_rollouts == 18 and batch.trained.all()
    batch.learn(allocator)
    assert sum(len(rewards) for _, rewards, _ in allocator.updates) == 18, "dropped groups are evidence too"


def test_dynamic_refills_the_missing_groups_and_truncates_to_num_prompts():
    # round 1 draws ceil(1.5 * 3) = 5 prompts and keeps prompt 1; round 2 draws ceil(1.5 * 2) = 3 and keeps 5, 6
    scripts = {0: [1, 1], 1: [0, 1], 2: [0, 0], 3: [1, 1], 4: [0, 0], 5: [1, 0], 6: [0, 1], 7: [1, 0]}
    generate = ScriptedGenerate(scripts)
    source = PromptPool(np.zeros(8), np.random.default_rng(0))
    allocator = vipfast.make_allocator("uniform", budget_per_prompt=2, min_rollouts=2, max_rollouts=2)
    batch = make_sampler("dynamic", oversample=1.5).sample(allocator, source, generate, 3)
    assert [len(ids) for ids in source.drawn] == [5, 3] and batch.rounds == 2
    np.testing.assert_array_equal(batch.prompts.ids, [1, 5, 6])  # prompt 7 is informative too, but past the target
    np.testing.assert_array_equal(batch.rollouts, [2, 3, 10, 11, 12, 13])
    assert batch.complete and batch.generated_rollouts == 16 and len(batch.pending) == 2


def test_dynamic_stops_at_its_round_limit_with_what_it_has():
    scripts = {q: [0.0, 0.0] for q in range(20)}
    scripts[2] = [0.0, 1.0]  # the only informative prompt
    generate = ScriptedGenerate(scripts)
    source = PromptPool(np.zeros(20), np.random.default_rng(0))
    allocator = vipfast.make_allocator("uniform", budget_per_prompt=2, min_rollouts=2, max_rollouts=2)
    batch = make_sampler("dynamic", oversample=2.0, max_rounds=2).sample(allocator, source, generate, 4)
    assert [len(ids) for ids in source.drawn] == [8, 6]   # ceil(2 * 4), then ceil(2 * 3)
    assert not batch.complete and batch.rounds == 2
    np.testing.assert_array_equal(batch.prompts.ids, [2])
    np.testing.assert_array_equal(batch.rollouts, [4, 5])
    assert batch.generated_rollouts == 28 and len(batch.pending) == 2


def test_dynamic_stops_when_the_source_runs_dry(rng):
    class Finite(PromptPool):
        def draw(self, count):
            count = min(count, max(0, 6 - self.position))
            return super().draw(count)

    p = np.zeros(6)
    generate = FakeGenerate(p, rng)
    batch = make_sampler("dynamic", max_rounds=50).sample(make_allocator("uniform"), Finite(p, rng), generate, 3)
    assert not batch.complete and len(batch.prompts) == 0 and batch.rounds == 1 and batch.prompts_drawn == 6


def test_dynamic_draws_through_the_allocators_screen(rng):
    class Screening(Spy):
        def screen(self, keys):
            return keys % 2 == 0  # keeps even ids (keys are ids + 1000)

    p = np.full(64, 0.5)
    source, generate = PromptPool(p, rng), FakeGenerate(p, rng, encode=True)
    batch = make_sampler("dynamic", oversample=1.0).sample(Screening(make_allocator("uniform")), source, generate, 4)
    assert (batch.prompts.ids % 2 == 0).all() and batch.complete
    sent = sum(len(ids) for ids, _ in generate.calls)
    assert batch.prompts_drawn == sum(len(ids) for ids in source.drawn) > sent


# -- reinforce_ada ---------------------------------------------------------------------------------------------------

def test_exit_rules():
    successes, failures = np.array([0, 1, 2, 2, 3, 1, 8]), np.array([8, 7, 1, 2, 0, 3, 0])
    np.testing.assert_array_equal(exits("positive", successes, failures, 4), successes >= 1)
    np.testing.assert_array_equal(exits("balanced", successes, failures, 4), [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(exits("balanced", successes, failures, 5), [0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(exits("balanced", [2, 2, 1], [3, 2, 4], 5), [1, 0, 0])


@pytest.mark.parametrize("success,group_size,expected", [
    ([1, 0, 0, 0, 0, 0, 0, 0], 4, [0, 1, 2, 3]),            # one success, failures fill
    ([0, 1, 1, 1, 1, 1, 1, 1], 4, [0, 1, 2, 3]),            # one failure, successes fill
    ([1, 1, 1, 0, 0, 1, 0, 0], 4, [0, 1, 3, 4]),            # two of each, the earliest
    ([1, 1, 1, 0, 0, 1, 0, 0], 5, [0, 1, 3, 4, 6]),         # odd size: ⌊5/2⌋ successes, 3 failures
    ([0, 0, 0, 0, 0, 0], 4, [0, 1, 2, 3]),
    ([1, 0, 1], 4, [0, 1, 2]),                              # a pool smaller than the group is kept whole
], ids=["one-success", "one-failure", "balanced", "odd", "all-failures", "small-pool"])
def test_balanced_downsample(success, group_size, expected):
    np.testing.assert_array_equal(balanced_downsample(np.array(success, dtype=bool), group_size), expected)


def reinforce_ada(scripts, **options):
    generate = ScriptedGenerate(scripts)
    source = PromptPool(np.zeros(len(scripts)), np.random.default_rng(0))
    allocator = Spy(make_allocator("beta"))
    batch = make_sampler("reinforce_ada", **options).sample(allocator, source, generate, len(scripts))
    return batch, generate, allocator


def test_reinforce_ada_balanced_rule_on_hand_built_rounds():
    scripts = {0: [1, 1, 0, 0, 1, 1, 1, 1],       # round 1: 2 successes, 0 failures; round 2: 2 + 2 -> exits
               1: [1, 0, 1, 0, 0, 0, 0, 0],       # 1 + 1, then 2 + 2 -> exits after round 2
               2: [0.7, 0.71, 0.9, 0.2, 1, 1, 1, 1],  # 0.7 is a failure (> 0.7 succeeds): exits after round 2
               3: [0, 0, 0, 0, 0, 0, 1, 0],       # never 2 successes: unresolved, pool mixed -> kept
               4: [1, 1, 1, 1, 1, 1, 1, 1],       # unresolved, all equal -> filtered
               5: [0, 1, 0, 1, 1, 1, 1, 1]}       # exits after round 2
    batch, generate, _ = reinforce_ada(scripts, per_round=2, rounds=4, group_size=4)
    counts_per_round = [dict(zip(ids.tolist(), counts.tolist())) for ids, counts in generate.calls]
    assert counts_per_round == [{q: 2 for q in range(6)}, {q: 2 for q in range(6)}, {3: 2, 4: 2}, {3: 2, 4: 2}]
    np.testing.assert_array_equal(batch.prompts.ids, [0, 1, 2, 3, 5])
    assert not batch.complete, "an unresolved all-equal prompt was filtered"
    np.testing.assert_array_equal(batch.group_sizes, [4, 4, 4, 8, 4])   # baseline="all": the whole pool
    trained = [batch.rewards[a:b][batch.trained[a:b]].tolist()
               for a, b in zip(np.cumsum(batch.group_sizes) - batch.group_sizes, np.cumsum(batch.group_sizes))]
    assert trained == [[1, 1, 0, 0], [1, 0, 1, 0], [0.7, 0.71, 0.9, 0.2], [0, 0, 0, 1], [0, 1, 0, 1]]
    assert batch.generated_rollouts == 6 * 4 + 2 * 4 and batch.rounds == 4
    observation, = batch.pending
    np.testing.assert_array_equal(observation.group_sizes, [4, 4, 4, 8, 8, 4])


def test_reinforce_ada_positive_rule_and_unresolved_options():
    scripts = {0: [0, 0, 0, 1, 0, 0], 1: [1, 1, 1, 1, 1, 1], 2: [0, 0, 0, 0, 0, 0]}
    filtered, generate, _ = reinforce_ada(scripts, exit_rule="positive", per_round=2, rounds=3)
    assert [len(ids) for ids, _ in generate.calls] == [3, 2, 1]   # 1 exits in round 1, 0 in round 2
    np.testing.assert_array_equal(filtered.prompts.ids, [0, 1])
    assert not filtered.complete
    kept, _, _ = reinforce_ada(scripts, exit_rule="positive", per_round=2, rounds=3, unresolved="keep")
    np.testing.assert_array_equal(kept.prompts.ids, [0, 1, 2])
    assert kept.complete
    np.testing.assert_array_equal(kept.rewards[kept.trained][-4:], [0, 0, 0, 0])


def test_reinforce_ada_group_baseline_groups_only_the_downsampled():
    scripts = {0: [1, 0, 1, 0, 1, 1, 1, 1], 1: [1, 1, 1, 1, 0, 0, 1, 0]}  # 0 exits after round 1, 1 after 2
    every, _, _ = reinforce_ada(scripts, per_round=4, group_size=4, baseline="all")
    down, _, _ = reinforce_ada(scripts, per_round=4, group_size=4, baseline="group")
    np.testing.assert_array_equal(every.group_sizes, [4, 8])
    np.testing.assert_array_equal(every.trained, [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(down.group_sizes, [4, 4])
    assert down.trained.all()
    np.testing.assert_array_equal(down.rollouts, every.rollouts[every.trained])
    assert every.generated_rollouts == down.generated_rollouts == 12


@pytest.mark.parametrize("exit_rule", ["balanced", "positive"])
def test_reinforce_ada_trained_groups_have_the_published_size(exit_rule, rng):
    batch, allocator, source, generate = run("reinforce_ada", "beta", rng, num_prompts=32, encode=True,
                                             options=dict(exit_rule=exit_rule, unresolved="keep"))
    check_batch_invariants(batch, generate, source)
    per_prompt = np.bincount(np.repeat(batch.group_prompt, batch.group_sizes), weights=batch.trained)
    assert (per_prompt == 4).all() and batch.rounds <= 4
    assert batch.generated_rollouts <= 32 * 32


# -- pods -------------------------------------------------------------------------------------------------------------

def brute_force_variance(values, size):
    return max(np.var(values[list(subset)]) for subset in itertools.combinations(range(len(values)), size))


@pytest.mark.parametrize("kind", ["binary", "ties", "continuous", "extreme"])
def test_max_variance_selection_matches_brute_force(kind, rng):
    for _ in range(60):
        sizes = rng.integers(0, 9, rng.integers(1, 5))
        n = int(sizes.sum())
        rewards = {"binary": lambda: rng.integers(0, 2, n).astype(float),
                   "ties": lambda: rng.integers(0, 4, n) / 3,
                   "continuous": lambda: rng.normal(size=n),
                   "extreme": lambda: rng.choice([-1e300, 1e300, 0.0, 5e-324], n)}[kind]()
        keep = int(rng.integers(1, 8))
        chosen = max_variance_selection(rewards, sizes, keep)
        for start, size in zip(np.cumsum(sizes) - sizes, sizes):
            group, mask = rewards[start:start + size], chosen[start:start + size]
            assert mask.sum() == min(keep, size)
            if 0 < size and keep < size:
                best = brute_force_variance(group / np.abs(group).max(initial=1e-300), keep)
                got = np.var(group[mask] / np.abs(group).max(initial=1e-300))
                assert got == pytest.approx(best, rel=1e-12, abs=1e-15), (group, keep)
                ranks = set(np.argsort(np.argsort(group, kind="stable"), kind="stable")[mask].tolist())
                assert any(ranks == set(range(low)) | set(range(size - keep + low, size)) for low in range(keep + 1))


def test_max_variance_selection_on_binary_rewards_balances_the_subset():
    chosen = max_variance_selection([1, 1, 1, 1, 1, 0, 1, 0, 1, 1], [10], 4)
    np.testing.assert_array_equal(np.flatnonzero(chosen), [5, 7, 8, 9])   # both failures, the latest successes


def test_max_variance_selection_refuses_bad_input():
    with pytest.raises(ValueError, match="finite"):
        max_variance_selection([0.0, np.nan], [2], 1)
    with pytest.raises(ValueError, match="add up"):
        max_variance_selection([0.0, 1.0], [3], 1)
    with pytest.raises(ValueError, match="keep"):
        max_variance_selection([0.0, 1.0], [2], 0)
    with pytest.raises(ValueError, match="whole numbers"):
        max_variance_selection([0.0, 1.0], [1.5, 0.5], 1)
    with pytest.raises(ValueError, match="1-D"):
        max_variance_selection([[0.0, 1.0]], [2], 1)
    with pytest.raises(TypeError, match="rewards"):
        max_variance_selection(["a", "b"], [2], 1)
    with pytest.raises(ValueError, match="add up"):
        max_variance_selection([0.0, 1.0], [2**62, -(2**62) + 2], 1)
    assert max_variance_selection([], [], 3).shape == (0,)
    assert max_variance_selection([3.0, 1.0, 2.0], [3], 2**62).all()  # keep beyond any group: everything


def test_group_helpers_refuse_bad_input():
    with pytest.raises(ValueError, match="add up"):
        informative_groups([0.0, 1.0, 1.0], [2])
    with pytest.raises(ValueError, match=r"rewards\[1\]"):
        informative_groups([0.0, np.inf], [2])
    with pytest.raises(ValueError, match="exit_rule"):
        exits("balance", [1], [1], 4)
    with pytest.raises(ValueError, match="group_size"):
        balanced_downsample(np.array([True]), 0)
    np.testing.assert_array_equal(balanced_downsample(np.array([1, 1, 0, 1]), 2), [0, 2])  # 0/1 ints as flags


def test_pods_trains_on_each_groups_max_variance_subset(rng):
    batch, allocator, source, generate = run("pods", "beta", rng, options=dict(keep=3))
    check_batch_invariants(batch, generate, source)
    (kind, plan), = allocator.events
    np.testing.assert_array_equal(batch.group_sizes, np.minimum(plan.counts, 3))
    assert batch.trained.all() and batch.generated_rollouts == plan.total
    generated = np.asarray(generate.rewards)
    for q, (start, size) in enumerate(zip(np.cumsum(batch.group_sizes) - batch.group_sizes, batch.group_sizes)):
        own = generated[np.asarray(generate.prompt_of) == batch.prompts.ids[q]]
        assert np.var(batch.rewards[start:start + size]) == pytest.approx(brute_force_variance(own, size), rel=1e-12)


# -- vip_rounds -------------------------------------------------------------------------------------------------------

def brute_force_extra(weights, first, extra, high, estimator):
    room = [range(0, high - f + 1) for f in first]
    best = None
    for delta in itertools.product(*room):
        if sum(delta) == extra:
            value = allocation_objective(weights, np.add(first, delta), min_rollouts=int(min(first)),
                                         max_rollouts=high, estimator=estimator)
            best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("estimator", ["rloo", "drgrpo"])
def test_extra_rollouts_equals_brute_force(estimator, rng):
    low = 2 if estimator == "rloo" else 3
    for _ in range(40):
        q = int(rng.integers(1, 5))
        high = low + int(rng.integers(0, 5))
        first = rng.integers(low, high + 1, q)
        weights = rng.choice([0.0, 1e-9, 0.25, 0.1, 1.0], q) * rng.random(q)
        extra = int(rng.integers(0, int((high - first).sum()) + 1))
        delta = extra_rollouts(weights, first, extra, max_rollouts=high, estimator=estimator)
        assert delta.dtype == np.int64 and delta.sum() == extra and (delta >= 0).all() and (first + delta <= high).all()
        got = allocation_objective(weights, first + delta, min_rollouts=int(first.min()), max_rollouts=high,
                                   estimator=estimator)
        assert got == pytest.approx(brute_force_extra(weights, first, extra, high, estimator), rel=1e-12, abs=1e-300)


def test_extra_rollouts_with_extreme_weights():
    # the heavy prompts take their 5 units of room; the last unit goes by weight, not by index
    delta = extra_rollouts([1e300, 0.0, 1.0, 1e300], [2, 2, 2, 5], 6, max_rollouts=6)
    np.testing.assert_array_equal(delta, [4, 0, 1, 1])
    np.testing.assert_array_equal(extra_rollouts([0.0, 1e-300, 2e-300], [2, 2, 2], 3, max_rollouts=4), [0, 1, 2])
    np.testing.assert_array_equal(extra_rollouts(np.zeros(3), [2, 2, 2], 4, max_rollouts=4), [2, 1, 1])


def test_extra_rollouts_with_a_huge_upper_bound_needs_no_huge_table():
    first = np.array([2, 3, 2])
    delta = extra_rollouts([0.2, 0.1, 0.05], first, 5, max_rollouts=2**62)
    np.testing.assert_array_equal(delta, extra_rollouts([0.2, 0.1, 0.05], first, 5, max_rollouts=8))
    with pytest.raises(ValueError, match="room"):
        extra_rollouts([0.2], [2], 2**63 - 1, max_rollouts=2**62)


def test_extra_rollouts_refuses_bad_input():
    with pytest.raises(ValueError, match="room"):
        extra_rollouts([1.0, 1.0], [3, 4], 4, max_rollouts=5)
    with pytest.raises(ValueError, match=r"weights\[1\] = -1"):
        extra_rollouts([1.0, -1.0], [3, 4], 1, max_rollouts=5)
    with pytest.raises(ValueError, match="max_rollouts"):
        extra_rollouts([1.0, 1.0], [3, 6], 1, max_rollouts=5)
    with pytest.raises(TypeError, match="extra"):
        extra_rollouts([1.0, 1.0], [3, 4], 1.0, max_rollouts=5)


@pytest.mark.parametrize("allocator_name", ALLOCATORS)
def test_vip_rounds_learns_round_one_then_replans_the_rest_exactly(allocator_name, rng):
    batch, allocator, source, generate = run("vip_rounds", allocator_name, rng, options=dict(first_fraction=0.5))
    events = [kind for kind, _ in allocator.events]
    assert events == ["plan", "update", "plan"], "round 1 is learned inside the step, before the re-plan"
    first_plan, (learned, first_rewards, first), replan = [value for _, value in allocator.events]
    budget = first_plan.total
    assert first.sum() == max(8 * 2, round(0.5 * budget)) and (first >= 2).all()
    np.testing.assert_array_equal(learned.counts, first)
    np.testing.assert_array_equal(decode(first_rewards), np.arange(first.sum()))
    (second_ids, second_counts) = generate.calls[1]
    position = {int(key) - 1000: row for row, key in enumerate(replan.keys)}
    extra = np.zeros(8, dtype=np.int64)
    extra[[position[int(i)] for i in second_ids]] = second_counts
    expected = extra_rollouts(replan.weights, first, budget - first.sum(), max_rollouts=12)
    np.testing.assert_array_equal(extra, expected)
    np.testing.assert_array_equal(batch.group_sizes, first + extra)
    assert batch.generated_rollouts == budget and batch.rounds == 2


def test_vip_rounds_round_groups(rng):
    batch, allocator, source, generate = run("vip_rounds", "beta", rng, options=dict(groups="round"))
    check_batch_invariants(batch, generate, source)
    first_total = int(generate.calls[0][1].sum())
    per_prompt = np.bincount(batch.group_prompt, minlength=8)
    second_ids = set(generate.calls[1][0].tolist())
    np.testing.assert_array_equal(per_prompt, [1 + (i in second_ids) for i in batch.prompts.ids])
    starts = np.cumsum(batch.group_sizes) - batch.group_sizes
    for start, size in zip(starts, batch.group_sizes):
        group = batch.rollouts[start:start + size]
        assert (group < first_total).all() or (group >= first_total).all(), "a group spans two rounds"


def test_vip_rounds_with_the_whole_budget_in_round_one_is_one_round(rng):
    batch, allocator, source, generate = run("vip_rounds", "beta", rng, options=dict(first_fraction=1.0))
    assert batch.rounds == 1 and batch.pending == [] and len(allocator.updates) == 1


def test_vip_rounds_needs_a_vipfast_allocator(rng):
    class Bare:
        def plan(self, *args, **kwargs):
            raise AssertionError("not reached")

    with pytest.raises(TypeError, match="vip_rounds needs a vipfast allocator"):
        make_sampler("vip_rounds").sample(Bare(), PromptPool([0.5], rng), FakeGenerate([0.5], rng), 1)


class StopsWhenMixed(AllocatorBase):
    """Weight ~0 for a prompt whose last rewards were mixed, 1 otherwise: a stopping rule that makes a
    prompt's second-round size depend strongly on its first-round rewards."""

    name = "stops-when-mixed"

    def __init__(self, **options):
        super().__init__(**options)
        self.mixed = {}

    def weigh(self, keys, prompts, embeddings):
        return Weighing(weights=np.array([1e-6 if self.mixed.get(int(k)) else 1.0 for k in keys]))

    def learn(self, plan, successes, trials):
        self.mixed.update({int(k): bool(0 < s < n) for k, s, n in zip(plan.keys, successes, trials)})


def rloo_advantages(rewards, sizes):
    """r_j minus the mean of the other rewards of its group (0 for a group of one), from the definition."""
    advantages, start = np.zeros(len(rewards)), 0
    for size in sizes:
        group = rewards[start:start + size]
        if size > 1:
            advantages[start:start + size] = group - (group.sum() - group) / (size - 1)
        start += size
    return advantages


def score_excess(groups, replicates, seed):
    """Per replicate: Σ_j A_j s_j − N·p(1−p) over the rollouts of a Bernoulli(p) prompt (p = σ(θ), score
    s_j = y_j − p), N its rollouts. Unbiased advantages make its expectation 0 (E[A_j s_j] = ∂E[r]/∂θ)."""
    p = 0.5
    rng = np.random.default_rng(seed)
    probabilities = np.array([p, 1.0])      # the prompt under test and a reference prompt that always succeeds
    allocator = StopsWhenMixed(budget_per_prompt=5.0, min_rollouts=2, max_rollouts=8)
    sampler = make_sampler("vip_rounds", first_fraction=0.4, groups=groups)

    class Two:
        def draw(self, count):
            return Prompts(ids=np.arange(2, dtype=np.int64), keys=np.arange(2, dtype=np.uint64))

    def generate(prompts, counts):
        ids = np.repeat(prompts.ids, counts)
        return Outcomes(rewards=(rng.random(len(ids)) < probabilities[ids]).astype(float), tokens=np.zeros(len(ids)))

    excess, sizes = np.empty(replicates), np.empty(replicates, dtype=np.int64)
    for i in range(replicates):
        batch = sampler.sample(allocator, Two(), generate, 2)
        mine = np.repeat(batch.group_prompt, batch.group_sizes) == 0
        advantages = rloo_advantages(batch.rewards, batch.group_sizes)[mine]
        successes = batch.rewards[mine]
        excess[i] = np.sum(advantages * (successes - p)) - mine.sum() * p * (1 - p)
        sizes[i] = mine.sum()
    return excess, sizes


@pytest.mark.slow
def test_round_groups_give_unbiased_advantages_and_prompt_groups_do_not():
    replicates = 1500
    for groups in ("round", "prompt"):
        excess, sizes = score_excess(groups, replicates, seed=20260101)
        assert set(sizes.tolist()) == {2, 5}, "the design needs the second round to depend on the first"
        standard_error = excess.std(ddof=1) / math.sqrt(replicates)
        z = excess.mean() / standard_error
        if groups == "round":
            assert abs(z) < 4, (excess.mean(), standard_error)
        else:
            # exact bias of this design: 1/2·(1 − 1/2) + 1/2·(9/8 − 5/4) = 3/16 per step
            assert z > 4 and excess.mean() == pytest.approx(3 / 16, abs=4 * standard_error)


def test_drawing_no_prompts_gives_an_empty_batch_of_prompts(rng):
    allocator = vipfast.make_allocator("uniform", min_rollouts=2, max_rollouts=8)
    prompts, drawn = make_sampler("single").draw(allocator, PromptPool(np.full(10, 0.5), rng), 0)
    assert len(prompts) == 0 and drawn == 0
