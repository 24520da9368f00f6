"""Verifiable tasks: prompts with reference answers, and a verifier that scores completions 0/1.

- `arithmetic_task`: the embedded default. Integer arithmetic at a spread of difficulties (one-digit
  sums up to two-digit-by-one-digit products), so a partly trained policy solves some prompts always,
  some never and some sometimes: the population VIP is for. The answer is written least-significant
  digit first, which the prompt's trailing `r` announces: prompt `"47+38=r"`, answer `"58"` (85).
  Each answer digit then depends only on the operand digits at its place and the carry from the
  digit just written, an algorithm a tiny transformer can learn and RL can sharpen; written
  most-significant digit first, the first digit needs every carry at once, and RL on it did not
  raise held-out accuracy (RESULTS.md).
- `dataset_task`: local JSONL / Parquet through `datasets`, question/answer fields configurable.
- verifiers: "exact" (string match after stripping) and "math" (math-verify: parses both sides,
  so `0.5`, `\\frac{1}{2}` and `\\boxed{1/2}` match).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import numpy as np

from .config import TaskConfig

# (operator, digits of the first operand, digits of the second): roughly easiest first.
ARITHMETIC_LEVELS = (("+", 1, 1), ("-", 1, 1), ("+", 2, 1), ("+", 2, 2), ("-", 2, 2), ("*", 1, 1),
                     ("+", 3, 2), ("*", 2, 1))


REVERSED_ANSWER_MARK = "r"
# One problem in HELD_OUT_SHARE, chosen by a hash of its prompt, is reserved for evaluation: neither
# the supervised warm start nor RL ever trains on it, whatever the task sizes.
HELD_OUT_SHARE = 5


@dataclass
class Task:
    train: list[tuple[str, str]]  # (prompt, reference answer)
    held_out: list[tuple[str, str]]
    verify: callable  # (completions [N], references [N]) -> float rewards [N] in {0, 1}


def arithmetic_problems(count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """`count` problems, levels drawn uniformly; subtraction keeps results non-negative."""
    problems = []
    for level in rng.integers(len(ARITHMETIC_LEVELS), size=count):
        op, da, db = ARITHMETIC_LEVELS[level]
        a = int(rng.integers(10 ** (da - 1) if da > 1 else 0, 10**da))
        b = int(rng.integers(10 ** (db - 1) if db > 1 else 0, 10**db))
        if op == "-" and b > a:
            a, b = b, a
        value = a + b if op == "+" else a - b if op == "-" else a * b
        problems.append((f"{a}{op}{b}={REVERSED_ANSWER_MARK}", str(value)[::-1]))
    return problems


def is_held_out(prompt: str) -> bool:
    return zlib.crc32(prompt.encode()) % HELD_OUT_SHARE == 0


def training_problems(count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """`count` problems none of which can ever be in a held-out set (the supervised warm start's data)."""
    problems = []
    while len(problems) < count:
        problems += [p for p in arithmetic_problems(count, rng) if not is_held_out(p[0])]
    return problems[:count]


def arithmetic_task(config: TaskConfig) -> Task:
    """Distinct problems from one stream, each going to the held-out set or the training pool by
    `is_held_out`, so both sets are samples of the same distribution (the easy levels, with few
    distinct problems, are not left to one side) and never share a problem with each other or with
    the warm start. The problems are fixed (not the run's seed), so runs of different seeds and
    allocators train on the same pool and are scored on the same held-out set."""
    rng = np.random.default_rng(0xA817)
    seen, train, held_out = set(), [], []
    while len(train) < config.train_size or len(held_out) < config.eval_size:
        for prompt, answer in arithmetic_problems(256, rng):
            if prompt in seen:
                continue
            seen.add(prompt)
            part, size = (held_out, config.eval_size) if is_held_out(prompt) else (train, config.train_size)
            if len(part) < size:
                part.append((prompt, answer))
    return Task(train=train, held_out=held_out, verify=exact_match)


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


def _read_rows(path: str, config: TaskConfig, limit: int | None = None) -> list[tuple[str, str]]:
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
    return [(config.prompt_template.format(question=str(q)), str(a))
            for q, a in zip(rows[config.question_field], rows[config.answer_field])]


def dataset_task(config: TaskConfig) -> Task:
    train = _read_rows(config.path, config)
    if not train:
        raise ValueError(f"task.path {config.path} has no rows")
    held_out = _read_rows(config.eval_path, config, config.eval_size) if config.eval_path else []
    return Task(train=train, held_out=held_out, verify=VERIFIERS[config.verifier])


def make_task(config: TaskConfig) -> Task:
    if config.kind == "arithmetic":
        return arithmetic_task(config)
    return dataset_task(config)
