"""Verifiable tasks: prompts with reference answers, and a scorer that turns completions into rewards.

- `arithmetic_task`: the embedded default. Integer arithmetic at a spread of difficulties (one-digit
  sums up to two-digit-by-one-digit products), so a partly trained policy solves some prompts always,
  some never and some sometimes: the population VIP is for. The answer is written least-significant
  digit first, which the prompt's trailing `r` announces: prompt `"47+38=r"`, answer `"58"` (85).
  Each answer digit then depends only on the operand digits at its place and the carry from the
  digit just written, an algorithm a tiny transformer can learn and RL can sharpen; written
  most-significant digit first, the first digit needs every carry at once, and RL on it did not
  raise held-out accuracy (RESULTS.md). Each level is a family ("2+1": two digits plus one).
- `dataset_task`: local JSONL / Parquet through `datasets`, question/answer fields configurable.
- `reasoning_gym`: a suite of procedural families from the reasoning-gym package (suite.py).
- scorers: "exact" (string match after stripping) and "math" (math-verify: parses both sides,
  so `0.5`, `\\frac{1}{2}` and `\\boxed{1/2}` match), or `task.reward: package.module:function`.
"""

from __future__ import annotations

import importlib
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .config import TaskConfig

# (operator, digits of the first operand, digits of the second): roughly easiest first.
ARITHMETIC_LEVELS = (("+", 1, 1), ("-", 1, 1), ("+", 2, 1), ("+", 2, 2), ("-", 2, 2), ("*", 1, 1),
                     ("+", 3, 2), ("*", 2, 1))


REVERSED_ANSWER_MARK = "r"
# The tiny model's characters for arithmetic (and for datasets, whose tiny-model warm start is arithmetic).
ARITHMETIC_CHARACTERS = "0123456789+-*= " + REVERSED_ANSWER_MARK
# One problem in HELD_OUT_SHARE, chosen by a hash of its prompt, is reserved for evaluation: neither
# the supervised warm start nor RL ever trains on it, whatever the task sizes.
HELD_OUT_SHARE = 5


class Problem(NamedTuple):
    prompt: str
    answer: str  # the reference answer (the warm start's target, a custom reward's reference)
    family: str = ""  # which family of the task it belongs to ("" for a task of one family)
    entry: Any = None  # what the task's own scorer needs beyond the answer (a reasoning-gym entry)


Scorer = Callable[[Sequence[str], Sequence[Problem]], np.ndarray]


@dataclass(frozen=True)
class TinyRecipe:
    """What the tiny model built in code needs from a task: its tokenizer's characters and phrases (each phrase
    one token), its positions, and supervised warm-start data that never holds a held-out prompt."""

    characters: str
    batches: Callable[[int, np.random.Generator], Iterator[list[tuple[str, str]]]]  # (batch size, rng) -> batches
    phrases: tuple[str, ...] = ()
    max_positions: int = 64
    key: dict = field(default_factory=dict)  # what identifies the data in the warm start's cache key


@dataclass
class Task:
    train: list[Problem]
    held_out: list[Problem]
    score: Scorer  # (completions [N], problems [N]) -> float rewards [N]
    tiny: TinyRecipe | None = None
    families: tuple[str, ...] = ()  # the family labels, in order; () when there is one unnamed family


def arithmetic_problems(count: int, rng: np.random.Generator) -> list[Problem]:
    """`count` problems, levels drawn uniformly; subtraction keeps results non-negative."""
    problems = []
    for level in rng.integers(len(ARITHMETIC_LEVELS), size=count):
        op, da, db = ARITHMETIC_LEVELS[level]
        a = int(rng.integers(10 ** (da - 1) if da > 1 else 0, 10**da))
        b = int(rng.integers(10 ** (db - 1) if db > 1 else 0, 10**db))
        if op == "-" and b > a:
            a, b = b, a
        value = a + b if op == "+" else a - b if op == "-" else a * b
        problems.append(Problem(f"{a}{op}{b}={REVERSED_ANSWER_MARK}", str(value)[::-1], f"{da}{op}{db}"))
    return problems


ARITHMETIC_FAMILIES = tuple(f"{da}{op}{db}" for op, da, db in ARITHMETIC_LEVELS)


def is_held_out(prompt: str) -> bool:
    return zlib.crc32(prompt.encode()) % HELD_OUT_SHARE == 0


def training_problems(count: int, rng: np.random.Generator) -> list[Problem]:
    """`count` problems none of which can ever be in a held-out set (the supervised warm start's data)."""
    problems = []
    while len(problems) < count:
        problems += [p for p in arithmetic_problems(count, rng) if not is_held_out(p.prompt)]
    return problems[:count]


def _arithmetic_batches(size: int, rng: np.random.Generator) -> Iterator[list[tuple[str, str]]]:
    while True:
        yield [(p.prompt, p.answer) for p in training_problems(size, rng)]


ARITHMETIC_RECIPE = TinyRecipe(characters=ARITHMETIC_CHARACTERS, batches=_arithmetic_batches)


def arithmetic_task(config: TaskConfig) -> Task:
    """Distinct problems from one stream, each going to the held-out set or the training pool by
    `is_held_out`, so both sets are samples of the same distribution (the easy levels, with few
    distinct problems, are not left to one side) and never share a problem with each other or with
    the warm start. The problems are fixed (not the run's seed), so runs of different seeds and
    allocators train on the same pool and are scored on the same held-out set."""
    rng = np.random.default_rng(0xA817)
    seen, train, held_out = set(), [], []
    while len(train) < config.train_size or len(held_out) < config.eval_size:
        for problem in arithmetic_problems(256, rng):
            if problem.prompt in seen:
                continue
            seen.add(problem.prompt)
            part, size = (held_out, config.eval_size) if is_held_out(problem.prompt) else (train, config.train_size)
            if len(part) < size:
                part.append(problem)
    return Task(train=train, held_out=held_out, score=answer_scorer(exact_match), tiny=ARITHMETIC_RECIPE,
                families=ARITHMETIC_FAMILIES)


def exact_match(completions, references) -> np.ndarray:
    return np.array([float(c.strip() == r.strip()) for c, r in zip(completions, references)])


def math_verify_match(completions, references) -> np.ndarray:
    try:
        from math_verify import parse, verify
    except ImportError:
        raise ImportError("task.verifier 'math' needs math-verify: `pip install \".[train]\"` in a vipfast "
                          "checkout") from None
    rewards = []
    for completion, reference in zip(completions, references):
        gold, answer = parse(reference), parse(completion)
        rewards.append(float(bool(gold) and bool(answer) and verify(gold, answer)))
    return np.array(rewards)


VERIFIERS = {"exact": exact_match, "math": math_verify_match}


def answer_scorer(verify: Callable) -> Scorer:
    """A scorer from a function of (completions, reference answers)."""
    return lambda completions, problems: verify(list(completions), [p.answer for p in problems])


# -- custom rewards ---------------------------------------------------------------------------------

def load_reward(path: str) -> Callable:
    """The function `package.module:function` names, imported; a ValueError saying what is wrong."""
    module_name, _, function_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"task.reward {path!r}: cannot import module {module_name!r} ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"task.reward {path!r}: module {module_name!r} has no function {function_name!r}")
    return function


def custom_scorer(path: str, function: Callable) -> Scorer:
    """Wraps a user's reward: it gets lists of completions and reference answers and must return one finite
    number per completion."""
    def score(completions, problems) -> np.ndarray:
        completions = list(completions)
        result = function(completions, [p.answer for p in problems])
        return check_rewards(path, result, len(completions))

    return score


def check_rewards(path: str, result, expected: int) -> np.ndarray:
    try:
        rewards = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"task.reward {path!r} must return numbers, one per completion; it returned "
                         f"{type(result).__name__} {str(result)[:80]}") from None
    if rewards.shape != (expected,):
        raise ValueError(f"task.reward {path!r} returned shape {rewards.shape} for {expected} completions; it "
                         f"must return one number per completion")
    if not np.all(np.isfinite(rewards)):
        bad = int(np.flatnonzero(~np.isfinite(rewards))[0])
        raise ValueError(f"task.reward {path!r} returned {rewards[bad]} for completion {bad}; rewards must be finite")
    return rewards


def with_custom_reward(task: Task, path: str) -> Task:
    """The task scored by `path` instead of its own scorer, after a trial call on its first problem."""
    function = load_reward(path)
    probe = [p.answer for p in task.train[:1]]
    try:
        result = function(list(probe), list(probe))
    except Exception as error:  # the user's code: any failure is reported with what it was called with
        raise ValueError(f"task.reward {path!r} failed on (completions={probe!r}, references={probe!r}): "
                         f"{type(error).__name__}: {error}") from None
    check_rewards(path, result, len(probe))
    task.score = custom_scorer(path, function)
    return task


# -- datasets ---------------------------------------------------------------------------------------

def _read_rows(path: str, config: TaskConfig, limit: int | None = None) -> list[Problem]:
    from datasets import load_dataset
    from datasets.exceptions import DatasetsError
    from datasets.utils import logging as datasets_logging

    kind = "parquet" if path.endswith(".parquet") else "json"
    verbosity = datasets_logging.get_verbosity()
    datasets_logging.set_verbosity(logging.CRITICAL)  # it logs a traceback per unreadable file; one error says it
    try:
        rows = load_dataset(kind, data_files=path, split="train")
    except StopIteration:  # what `datasets` raises for an empty JSON file
        raise ValueError(f"task file {path} has no rows") from None
    except (DatasetsError, ValueError, OSError) as error:
        raise ValueError(f"task file {path} cannot be read as {kind}: {error.__cause__ or error}") from None
    finally:
        datasets_logging.set_verbosity(verbosity)
    for key in ("question_field", "answer_field"):
        name = getattr(config, key)
        if name not in rows.column_names:
            raise ValueError(f"task.{key} = {name!r} is not a column of {path}; it has {rows.column_names}")
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return [Problem(config.prompt_template.format(question=str(q)), str(a))
            for q, a in zip(rows[config.question_field], rows[config.answer_field])]


def dataset_task(config: TaskConfig) -> Task:
    train = _read_rows(config.path, config)
    if not train:
        raise ValueError(f"task.path {config.path} has no rows")
    held_out = _read_rows(config.eval_path, config, config.eval_size) if config.eval_path else []
    return Task(train=train, held_out=held_out, score=answer_scorer(VERIFIERS[config.verifier]),
                tiny=ARITHMETIC_RECIPE)


def make_task(config: TaskConfig) -> Task:
    if config.kind == "arithmetic":
        task = arithmetic_task(config)
    elif config.kind == "reasoning_gym":
        from .suite import reasoning_gym_task

        task = reasoning_gym_task(config)
    else:
        task = dataset_task(config)
    return with_custom_reward(task, config.reward) if config.reward else task


# -- what a run reports beside accuracy -------------------------------------------------------------

def by_family(values: np.ndarray, families: Sequence[str]) -> dict[str, float]:
    """Mean of `values` per family label, in order of first appearance."""
    sums, counts = Counter(), Counter()
    for value, family in zip(values.tolist(), families):
        sums[family] += value
        counts[family] += 1
    return {family: sums[family] / counts[family] for family in counts}


def majority_answers(task: Task) -> dict[str, str]:
    """The most common reference answer of each family's training prompts (ties: the first seen)."""
    answers: dict[str, Counter] = {}
    for problem in task.train:
        answers.setdefault(problem.family, Counter())[problem.answer] += 1
    return {family: counter.most_common(1)[0][0] for family, counter in answers.items()}


def majority_accuracy(task: Task) -> dict[str, float]:
    """Held-out accuracy, per family, of always answering that family's majority training answer: what a
    policy that ignores the question scores (answers are far from balanced in some families)."""
    majority = majority_answers(task)
    problems = [p for p in task.held_out if p.family in majority]
    if not problems:
        return {}
    rewards = task.score([majority[p.family] for p in problems], problems)
    return by_family(rewards, [p.family for p in problems])

