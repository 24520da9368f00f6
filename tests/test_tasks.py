"""task.kind 'reasoning_gym': sets from disjoint seeds and deduplicated prompts, the package's own prompts,
answers and scorer (exact answers only, completions stripped), mixture weights, majority answers, the tiny
model's tokenizer over template phrases, the warm start never seeing a held-out prompt, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("yaml")
reasoning_gym = pytest.importorskip("reasoning_gym")

from test_train import TINY, no_model, private_cache, read_rows  # noqa: E402,F401 - fixtures

from vipfast.train import Trainer, load_config, prepare_run  # noqa: E402
from vipfast.train.config import SUITE_SEED_GAP  # noqa: E402
from vipfast.train.model import build_tokenizer, warm_start_key  # noqa: E402
from vipfast.train.suite import family_seeds, shares, template_phrases  # noqa: E402
from vipfast.train.task import majority_accuracy, majority_answers, make_task  # noqa: E402

ONE_DIGIT = {"dataset": "basic_arithmetic", "name": "add1", "weight": 1,
             "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"],
                        "allow_parentheses": False, "allow_negation": False}}
SPELL = {"dataset": "spell_backward", "name": "spell", "weight": 2, "config": {"min_word_len": 3, "max_word_len": 4}}
GCD = {"dataset": "gcd"}
SUITE = [ONE_DIGIT, SPELL, GCD]


def suite_config(families=SUITE, train_size=90, eval_size=45, **overrides):
    return load_config(None, {"task.kind": "reasoning_gym", "task.families": families, "task.train_size": train_size,
                              "task.eval_size": eval_size, "allocator.prompts_per_step": 8, **overrides})


@pytest.fixture(scope="module")
def task():
    return make_task(suite_config().task)


def test_sets_are_disjoint_distinct_and_split_by_weight(task):
    train, held_out = [p.prompt for p in task.train], [p.prompt for p in task.held_out]
    assert len(set(train)) == len(train) == 90 and len(set(held_out)) == len(held_out) == 45
    assert not set(train) & set(held_out)
    assert task.families == ("add1", "spell", "gcd")
    assert [sum(p.family == f for p in task.train) for f in task.families] == [23, 45, 22]  # weights 1:2:1
    assert [sum(p.family == f for p in task.held_out) for f in task.families] == shares(45, [1, 2, 1]) == [11, 23, 11]


def test_the_sets_come_from_seeds_far_apart_and_dedup_is_not_vacuous(task):
    seeds = family_seeds(suite_config().task)
    assert seeds["held_out"] - seeds["train"] == seeds["warm_start"] - seeds["held_out"] == SUITE_SEED_GAP
    assert family_seeds(suite_config(**{"task.data_seed": 1}).task)["train"] == 3 * SUITE_SEED_GAP
    # One-digit sums have 242 distinct prompts: the pool's own seed does draw held-out prompts, which were skipped.
    raw = reasoning_gym.create_dataset("basic_arithmetic", seed=seeds["train"], size=200, **{
        k: tuple(v) if isinstance(v, list) else v for k, v in ONE_DIGIT["config"].items()})
    held_out = {p.prompt for p in task.held_out if p.family == "add1"}
    assert {entry["question"] for entry in raw} & held_out


def test_prompts_answers_and_scores_are_the_packages(task):
    spell = reasoning_gym.create_dataset("spell_backward", seed=family_seeds(suite_config().task)["train"], size=10,
                                         min_word_len=3, max_word_len=4)
    first = next(p for p in task.train if p.family == "spell")
    assert (first.prompt, first.answer) == (spell[0]["question"], spell[0]["answer"]) == (
        first.entry["question"], first.entry["answer"])
    problems = [p for p in task.held_out if p.family == "spell"][:3]
    word = problems[0].answer
    completions = [f"  {word}\n", word[:-1] + ("a" if word[-1] != "a" else "b"), word.upper()]
    rewards = task.score(completions, problems[:1] * 3)
    package = [spell.score_answer(c.strip(), problems[0].entry) for c in completions]
    assert rewards.tolist() == [float(s == 1.0) for s in package]
    assert rewards[0] == 1.0 and 0 < package[1] < 1 and rewards[1] == 0.0  # partial credit is not a success
    assert task.score([p.answer for p in task.held_out], task.held_out).tolist() == [1.0] * 45


def test_majority_answers_and_their_held_out_accuracy(task):
    majority = majority_answers(task)
    for family in task.families:
        answers = [p.answer for p in task.train if p.family == family]
        assert answers.count(majority[family]) == max(answers.count(a) for a in answers)
    accuracy = majority_accuracy(task)
    for family in task.families:
        held_out = [p for p in task.held_out if p.family == family]
        assert accuracy[family] == pytest.approx(np.mean([p.answer == majority[family] for p in held_out]))
    assert accuracy["spell"] == 0.0 and accuracy["gcd"] > 0.1  # gcd's answers are far from balanced


def test_template_phrases_are_one_token_each_and_decode_back(task):
    phrases = task.tiny.phrases
    assert "Spell this word backward (example: sun -> nus): " in phrases
    assert "Find the Greatest Common Divisor (GCD) of these numbers: " in phrases
    assert all(len(p) >= 4 for p in phrases)
    tokenizer = build_tokenizer(task.tiny)
    for problem in task.train + task.held_out:
        ids = tokenizer(problem.prompt)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == problem.prompt
        assert tokenizer.unk_token_id not in ids
    spell = next(p for p in task.train if p.family == "spell")
    assert len(tokenizer(spell.prompt)["input_ids"]) == 1 + 1 + len(spell.entry["metadata"]["word"])  # BOS, phrase, word
    newline = build_tokenizer(task.tiny)("ab\ncd")["input_ids"]
    assert len(newline) == 6 and tokenizer.decode(newline, skip_special_tokens=True) == "ab\ncd"
    assert template_phrases([], []) == ()


def test_the_warm_start_never_sees_a_held_out_prompt(task, rng):
    held_out = {p.prompt for p in task.held_out}
    batches = task.tiny.batches(64, np.random.default_rng(int(rng.integers(1000))))
    seen = [prompt for _ in range(30) for prompt, _ in next(batches)]
    assert len(set(seen)) > 300 and not set(seen) & held_out
    families = {p.family for p in task.train}
    assert families == {"add1", "spell", "gcd"}


def test_the_warm_start_cache_key_follows_the_suite():
    base = suite_config()
    keys = {warm_start_key(c.model, make_task(c.task).tiny) for c in (
        base, suite_config(families=[ONE_DIGIT, {**SPELL, "weight": 1}, GCD]), suite_config(**{"task.data_seed": 2}))}
    assert len(keys) == 3
    arithmetic = load_config(None, {})
    assert warm_start_key(arithmetic.model, make_task(arithmetic.task).tiny) == warm_start_key(arithmetic.model)


@pytest.mark.parametrize("families, message", [
    ([{"dataset": "no_such_dataset"}], "family 'no_such_dataset' (reasoning-gym dataset 'no_such_dataset'"),
    ([{"dataset": "gcd", "config": {"bogus": 1}}], "family 'gcd' (reasoning-gym dataset 'gcd' with options"),
    ([{"dataset": "spell_backward", "config": {"min_word_len": 6, "max_word_len": 3}}], "cannot be built"),
    ([{**ONE_DIGIT, "config": {**ONE_DIGIT["config"], "operators": ["+"]}}],
     "family 'add1' gave only"),
], ids=["dataset", "option", "range", "too-few-prompts"])
def test_a_family_that_cannot_be_built_is_named_before_any_model(tmp_path, no_model, families, message):
    config = suite_config(families=families, train_size=200, eval_size=40, run_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError) as error:
        prepare_run(config)
    assert message in str(error.value)


@pytest.mark.parametrize("override, message", [
    ({"task.families": []}, "task.families must be a list of at least one family"),
    ({"task.families": [{"name": "x"}]}, "task.families[0].dataset must be a reasoning-gym dataset name"),
    ({"task.families": [{"dataset": "gcd", "weight": 0}]}, "task.families[0].weight must be a finite number > 0"),
    ({"task.families": [{"dataset": "gcd", "weight": True}]}, "task.families[0].weight must be a finite number > 0"),
    ({"task.families": [{"dataset": "gcd", "config": {"seed": 3}}]}, "must be free of 'seed' and 'size'"),
    ({"task.families": [{"dataset": "gcd", "levels": 3}]}, "task.families[0] must be a mapping with keys among"),
    ({"task.families": [{"dataset": "gcd"}, {"dataset": "gcd"}]}, "task.families must be families with distinct names"),
    ({"task.families": [{"dataset": "gcd", "name": " g"}]}, "task.families[0].name must be a non-empty name"),
    ({"task.families": ["gcd"]}, "task.families[0] must be a mapping with string keys"),
    ({"task.families": "gcd"}, "task.families must be a list of a mapping with string keys"),
    ({"task.train_size": 2_000_000}, "task.train_size must be <= 1000000 for reasoning_gym"),
    ({"task.data_seed": 5000}, "task.data_seed must be an integer in [0, 1000]"),
], ids=["empty", "no-dataset", "zero-weight", "bool-weight", "seed-option", "unknown-key", "duplicate", "name",
        "not-mapping", "not-list", "size", "data-seed"])
def test_a_bad_suite_config_names_the_key(override, message):
    with pytest.raises(ValueError) as error:
        load_config(None, {"task.kind": "reasoning_gym", "task.families": [GCD], "allocator.prompts_per_step": 8,
                           **override})
    assert message in str(error.value)


def test_families_belong_to_reasoning_gym_and_need_the_package(tmp_path, monkeypatch, no_model):
    with pytest.raises(ValueError, match="task.families must be empty unless task.kind is 'reasoning_gym'"):
        load_config(None, {"task.families": [GCD]})
    from vipfast.train import config as config_module

    monkeypatch.setattr(config_module, "_installed", lambda module: module != "reasoning_gym")
    with pytest.raises(ValueError, match="task.kind 'reasoning_gym' needs the Python module reasoning_gym"):
        prepare_run(suite_config(run_dir=str(tmp_path / "run")))


@pytest.mark.slow
def test_a_suite_trains_end_to_end_with_per_family_metrics(tmp_path):
    from vipfast.train.plot import plot_run

    tiny = {k: v for k, v in TINY.items() if not k.startswith("task.")}
    config = suite_config(run_dir=str(tmp_path / "run"), **{**tiny, "allocator.prompts_per_step": 8,
                                                            "generation.max_new_tokens": 5})
    Trainer(config).run()
    rows = read_rows(tmp_path / "run")
    assert set(rows[0]["held_out_by_family"]) == set(rows[0]["majority_by_family"]) == {"add1", "spell", "gcd"}
    assert rows[0]["majority_accuracy"] == pytest.approx(
        np.average(list(rows[0]["majority_by_family"].values()), weights=[11, 23, 11]))
    assert set(rows[1]["rollouts_by_family"]) <= {"add1", "spell", "gcd"}
    assert sum(rows[1]["rollouts_by_family"].values()) == rows[1]["generated_rollouts"] == 40
    assert set(rows[-1]["held_out_by_family"]) == {"add1", "spell", "gcd"}
    assert plot_run(tmp_path / "run").stat().st_size > 10_000
