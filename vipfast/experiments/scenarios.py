"""Named scenarios: the populations allocators are compared on (`vipfast simulate --scenario NAME`).

Each is a set of Scenario fields over the defaults; flags given on the command line override them.
"""

from __future__ import annotations

from dataclasses import replace

from .population import Scenario

__all__ = ["SCENARIOS", "scenario"]

_LARGE = dict(num_prompts=16384, batch_size=1024, steps=64)  # 4 epochs

SCENARIOS: dict[str, dict] = {
    "default": {},
    "pool-4k": dict(num_prompts=4096, batch_size=256, steps=64),
    "pool-16k": _LARGE,
    "pool-64k": dict(num_prompts=65536, batch_size=1024, steps=192),
    "no-signal": dict(_LARGE, embedding_signal=0.0),
    "strong-signal": dict(_LARGE, visible_offset=0.8),
    "new-pool": dict(_LARGE, new_pool_step=32),
    "policy-shift": dict(_LARGE, shift_step=32),
    "frozen": dict(_LARGE, learning_rate=0.0),
    "learning": dict(response_noise=16.0, steps=96),
}

DESCRIPTIONS = {
    "default": "2,048 prompts, 256 per step, 8 epochs",
    "pool-4k": "4,096 prompts, 256 per step, 4 epochs",
    "pool-16k": "16,384 prompts, 1,024 per step, 4 epochs",
    "pool-64k": "65,536 prompts, 1,024 per step, 3 epochs",
    "no-signal": "pool-16k with embeddings that say nothing about difficulty",
    "strong-signal": "pool-16k with embeddings that also show 80 % of each prompt's own offset",
    "new-pool": "pool-16k, all prompts replaced by unseen ones at step 32",
    "policy-shift": "pool-16k, every skill redrawn at step 32",
    "frozen": "pool-16k with a policy that does not learn",
    "learning": "default with noisy per-response gradients: how fast the policy learns depends on the allocation",
}


def scenario(name: str, **overrides) -> Scenario:
    """The named scenario with `overrides` (Scenario fields) applied."""
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {tuple(SCENARIOS)}, got {name!r}")
    return replace(Scenario(**SCENARIOS[name]), **overrides)
