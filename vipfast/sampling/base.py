"""What every sampling mode shares: drawing prompts (with an allocator's screen), one generation round,
and the registry of mode names."""

from __future__ import annotations

import numpy as np

from .batch import Generate, Observation, Outcomes, PromptSource, Prompts, StepBatch

__all__ = ["Sampler", "register_sampler", "sampler_names", "make_sampler", "generate_round", "plan_for"]


class Sampler:
    """One step: prompts from a source → generation round(s) → a StepBatch.

    Modes that read rewards within a step subclass this and override `sample`. Every mode draws its
    prompts through `draw`, so a rule that skips prompts before rollout (an allocator with a
    `screen(keys) -> bool [k]` method, e.g. GRESO) works under every mode: skipped prompts are replaced
    by further draws, at most `max_draws` times the prompts asked for in one step.
    """

    name = "single"

    def __init__(self, *, max_draws: float = 8.0):
        if not max_draws >= 1:
            raise ValueError(f"max_draws must be >= 1, got {max_draws}")
        self.max_draws = float(max_draws)

    def options(self) -> dict:
        return dict(max_draws=self.max_draws)

    def draw(self, allocator, source: PromptSource, count: int) -> tuple[Prompts, int]:
        """(`count` prompts the allocator's screen keeps, or fewer if the draw limit is hit or the source runs dry;
        prompts drawn)."""
        if count <= 0:
            return source.draw(0), 0
        screen = getattr(allocator, "screen", None)
        kept, drawn, limit = [], 0, int(np.ceil(self.max_draws * count))
        while sum(map(len, kept)) < count and drawn < limit:
            need = count - sum(map(len, kept))
            candidates = source.draw(min(need, limit - drawn))
            dry = len(candidates) == 0
            drawn += len(candidates)
            if screen is not None:
                candidates = candidates.take(np.flatnonzero(screen(candidates.keys)))
            kept.append(candidates)
            if dry:
                break
        return Prompts.concat(kept), drawn

    def sample(self, allocator, source: PromptSource, generate: Generate, num_prompts: int) -> StepBatch:
        """Plan once for `num_prompts` prompts, generate, train on everything."""
        prompts, drawn = self.draw(allocator, source, num_prompts)
        plan, outcomes = generate_round(allocator, prompts, generate)
        sizes = plan.counts
        return StepBatch(prompts=prompts, group_prompt=np.arange(len(prompts)), group_sizes=sizes,
                         rollouts=np.arange(int(sizes.sum())), rewards=outcomes.rewards,
                         trained=np.ones(int(sizes.sum()), dtype=bool), generated_rollouts=int(sizes.sum()),
                         generated_tokens=int(outcomes.tokens.sum()), rounds=1, prompts_drawn=drawn,
                         complete=len(prompts) == num_prompts,
                         pending=[Observation(plan, outcomes.rewards, sizes)])


def plan_for(allocator, prompts: Prompts):
    """The allocator's plan for these prompts."""
    return allocator.plan(list(prompts.texts) if prompts.texts is not None else None, keys=prompts.keys,
                          embeddings=prompts.embeddings)


def generate_round(allocator, prompts: Prompts, generate: Generate):
    """(the allocator's plan for these prompts, the outcomes of generating it)."""
    plan = plan_for(allocator, prompts)
    outcomes = generate(prompts, plan.counts)
    _check_outcomes(outcomes, plan.total)
    return plan, outcomes


def _check_outcomes(outcomes: Outcomes, expected: int) -> None:
    if len(outcomes.rewards) != expected or len(outcomes.tokens) != expected:
        raise ValueError(f"generate returned {len(outcomes.rewards)} rewards and {len(outcomes.tokens)} token counts "
                         f"for {expected} requested rollouts")


_SAMPLERS: dict[str, type] = {}


def register_sampler(name: str, cls: type) -> None:
    if name in _SAMPLERS:
        raise ValueError(f"sampling mode {name!r} is registered twice")
    _SAMPLERS[name] = cls


def sampler_names() -> tuple[str, ...]:
    return tuple(_SAMPLERS)


def make_sampler(name: str, **options) -> Sampler:
    if name not in _SAMPLERS:
        raise ValueError(f"sampling mode must be one of {sampler_names()}, got {name!r}")
    return _SAMPLERS[name](**options)


register_sampler("single", Sampler)
