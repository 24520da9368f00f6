"""Verifiable tasks: prompts with reference answers, and a verifier that scores completions 0/1.

- `arithmetic_task`: the embedded default. Integer arithmetic at a spread of difficulties (one-digit
  sums up to two-by-two-digit products), so a partly trained policy solves some prompts always,
  some never and some sometimes: the population VIP is for. Prompt `"47+38="`, answer `"85"`.
- `dataset_task`: local JSONL / Parquet through `datasets`, question/answer fields configurable.
- verifiers: "exact" (string match after stripping) and "math" (math-verify: parses both sides,
  so `0.5`, `\\frac{1}{2}` and `\\boxed{1/2}` match).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import TaskConfig

# (operator, digits of the first operand, digits of the second): roughly easiest first.
ARITHMETIC_LEVELS = (("+", 1, 1), ("-", 1, 1), ("+", 2, 1), ("+", 2, 2), ("-", 2, 2), ("*", 1, 1),
                     ("+", 3, 2), ("*", 2, 1))


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
        problems.append((f"{a}{op}{b}=", str(value)))
    return problems


def arithmetic_task(config: TaskConfig) -> Task:
    """Distinct problems, split at random into the training pool and the held-out set, so both are
    samples of the same distribution (filling the pool first would leave the held-out set short of
    the easy levels, whose few distinct problems the pool takes). The split is fixed (not the run's
    seed), so runs of different seeds and allocators train on the same pool and are scored on the
    same held-out set."""
    rng = np.random.default_rng(0xA817)
    total = config.train_size + config.eval_size
    seen, problems = set(), []
    while len(problems) < total:
        for prompt, answer in arithmetic_problems(256, rng):
            if prompt not in seen and len(problems) < total:
                seen.add(prompt)
                problems.append((prompt, answer))
    order = rng.permutation(total)
    held_out = [problems[i] for i in order[:config.eval_size]]
    train = [problems[i] for i in order[config.eval_size:]]
    return Task(train=train, held_out=held_out, verify=exact_match)


def exact_match(completions, references) -> np.ndarray:
    return np.array([float(c.strip() == r.strip()) for c, r in zip(completions, references)])


def math_verify_match(completions, references) -> np.ndarray:
    try:
        from math_verify import parse, verify
    except ImportError:
        raise ImportError("task.verifier 'math' needs math-verify: pip install 'vipfast[train]'") from None
    rewards = []
    for completion, reference in zip(completions, references):
        gold, answer = parse(reference), parse(completion)
        rewards.append(float(bool(gold) and bool(answer) and verify(gold, answer)))
    return np.array(rewards)


VERIFIERS = {"exact": exact_match, "math": math_verify_match}


def _read_rows(path: str, config: TaskConfig, limit: int | None = None) -> list[tuple[str, str]]:
    from datasets import load_dataset

    kind = "parquet" if path.endswith(".parquet") else "json"
    rows = load_dataset(kind, data_files=path, split="train")
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
