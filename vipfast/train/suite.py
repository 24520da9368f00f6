"""`task.kind: reasoning_gym`: a suite of procedural families from the reasoning-gym package.

Each family is a reasoning-gym dataset with its own options and a mixture weight. Its prompts, reference
answers and scorer are the package's; nothing here re-implements them. The training pool, the held-out
set and the tiny model's warm-start data come from three seeds of the same generator, SUITE_SEED_GAP
apart: the package draws item i of seed s from `Random(s + i)`, so nearby seeds would replay each other's
items. Prompts are also deduplicated across the sets: the held-out set first, then the pool without any
held-out prompt; the warm start skips held-out prompts too. Everything is fixed by the config (not the
run's seed), so runs of different seeds and allocators share the pool and the held-out set.

Reward: 1 when the package's score of the stripped completion is exactly 1.0, else 0. The package gives
partial credit (wrong answers earn 0.01-0.1 in some families, and per-position credit in others), which
would make a group of wrong answers look informative and a policy's success rate undefined; exact answers
keep the rewards binary, what VIP's variance model p(1 - p) assumes.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .config import SUITE_SEED_GAP, TaskConfig
from .task import Problem, Task, TinyRecipe

# What the tiny model can read and write: printable ASCII and newlines.
SUITE_CHARACTERS = "".join(sorted(set(string.printable) - set("\t\r\x0b\x0c")))
SUITE_MAX_POSITIONS = 128
# A family must fill its share of a set within this many draws per prompt wanted (it may have few distinct prompts).
DRAWS_PER_PROMPT = 20
MIN_PHRASE = 4  # shorter common prefixes or suffixes are not worth a token


@dataclass(frozen=True)
class Family:
    name: str
    dataset: str
    weight: float
    options: dict


def suite_families(config: TaskConfig) -> list[Family]:
    return [Family(name=f.get("name", f["dataset"]), dataset=f["dataset"], weight=float(f.get("weight", 1)),
                   options=dict(f.get("config", {}))) for f in config.families]


def family_seeds(config: TaskConfig) -> dict[str, int]:
    """The first seed of each set; the pool's is data_seed · 3 · SUITE_SEED_GAP."""
    base = config.data_seed * 3 * SUITE_SEED_GAP
    return dict(train=base, held_out=base + SUITE_SEED_GAP, warm_start=base + 2 * SUITE_SEED_GAP)


def make_dataset(family: Family, seed: int):
    """The family's reasoning-gym dataset; its construction errors as one ValueError naming the family."""
    import reasoning_gym

    options = {key: tuple(value) if isinstance(value, list) else value for key, value in family.options.items()}
    try:
        return reasoning_gym.create_dataset(family.dataset, seed=seed, size=SUITE_SEED_GAP, **options)
    except (TypeError, ValueError, AssertionError, KeyError) as error:
        raise ValueError(f"task.families: family {family.name!r} (reasoning-gym dataset {family.dataset!r} with "
                         f"options {family.options}) cannot be built: {error or type(error).__name__}") from None


def shares(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainders; ties to the earlier family)."""
    exact = np.array(weights, dtype=np.float64) / sum(weights) * total
    counts = np.floor(exact).astype(int)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def distinct_problems(family: Family, dataset, count: int, exclude: set[str], what: str) -> list[Problem]:
    """The first `count` distinct prompts of the dataset's items 0, 1, ... that are not in `exclude`."""
    problems, seen = [], set()
    limit = DRAWS_PER_PROMPT * count + 1000
    index = 0
    while len(problems) < count:
        if index == limit:
            raise ValueError(f"task.families: family {family.name!r} gave only {len(problems)} distinct prompts for "
                             f"the {what} in {limit} draws, {count} wanted; lower its weight or the task's sizes, or "
                             f"widen its config")
        entry = dataset[index]
        index += 1
        prompt = entry["question"]
        if prompt in seen or prompt in exclude:
            continue
        seen.add(prompt)
        problems.append(Problem(prompt, entry["answer"], family.name, entry))
    return problems


def reasoning_gym_task(config: TaskConfig) -> Task:
    families = suite_families(config)
    seeds = family_seeds(config)
    weights = [f.weight for f in families]
    held_out, train, scorers = [], [], {}
    for family, count in zip(families, shares(config.eval_size, weights)):
        held_out += distinct_problems(family, make_dataset(family, seeds["held_out"]), count, set(), "held-out set")
    excluded = {p.prompt for p in held_out}
    for family, count in zip(families, shares(config.train_size, weights)):
        dataset = make_dataset(family, seeds["train"])
        scorers[family.name] = dataset.score_answer
        train += distinct_problems(family, dataset, count, excluded, "training pool")
    _check_answers_writable(train + held_out)

    def score(completions, problems) -> np.ndarray:
        return np.array([float(scorers[p.family](c.strip(), p.entry) == 1.0) for c, p in zip(completions, problems)])

    recipe = TinyRecipe(characters=SUITE_CHARACTERS, batches=_warm_start_batches(families, seeds, excluded),
                        phrases=template_phrases(train, families), max_positions=SUITE_MAX_POSITIONS,
                        key=dict(kind="reasoning_gym", families=[vars(f) for f in families], seeds=seeds,
                                 train_size=config.train_size, eval_size=config.eval_size))
    return Task(train=train, held_out=held_out, score=score, tiny=recipe, families=tuple(f.name for f in families))


def _check_answers_writable(problems: list[Problem]) -> None:
    for problem in problems:
        missing = set(problem.answer) - set(SUITE_CHARACTERS)
        if missing:
            raise ValueError(f"task.families: family {problem.family!r} has the answer {problem.answer!r}, with "
                             f"characters {sorted(missing)} the tiny model cannot write; use model.kind 'path' or "
                             f"another config")


def template_phrases(problems: list[Problem], families: list[Family]) -> tuple[str, ...]:
    """Each family's fixed wording: the longest prefix and suffix all its pool prompts share.

    The tiny model reads each as one token, so a prompt costs a position per character of what varies only."""
    phrases = []
    for family in families:
        prompts = [p.prompt for p in problems if p.family == family.name]
        if len(prompts) < 2:
            continue
        prefix = _common_prefix(prompts)
        suffix = _common_prefix([p[::-1] for p in prompts])[::-1]
        phrases += [text for text in (prefix, suffix) if len(text) >= MIN_PHRASE]
    return tuple(dict.fromkeys(phrases))


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    length = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    return first[:length]


def _warm_start_batches(families: list[Family], seeds: dict[str, int], excluded: set[str]):
    """The warm start's data: families drawn by weight, items read in order from each family's warm-start seed
    (fresh problems, held-out prompts skipped)."""
    weights = np.array([f.weight for f in families], dtype=np.float64)

    def batches(size: int, rng: np.random.Generator) -> Iterator[list[tuple[str, str]]]:
        datasets = [make_dataset(f, seeds["warm_start"]) for f in families]
        position = [0] * len(families)
        while True:
            batch = []
            for k in rng.choice(len(families), size=size, p=weights / weights.sum()).tolist():
                entry = datasets[k][position[k]]
                while entry["question"] in excluded:
                    position[k] += 1
                    entry = datasets[k][position[k]]
                position[k] += 1
                batch.append((entry["question"], entry["answer"]))
            yield batch

    return batches
