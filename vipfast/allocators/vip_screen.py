"""VIP with a pre-rollout screen: the predictor skips prompts it is confident are settled.

The exact solver gives every prompt at least `min_rollouts`; a prompt the policy always or never solves
still costs that many rollouts and teaches nothing. GRESO (arXiv 2506.02177) skips such prompts before
rollout by their streaks of all-equal groups; this rule asks SuccessModel instead. Before rollout, a prompt
seen before is kept when its allocation weight E[p(1 − p)] — from its own counts and the prior its
embedding gave at its last visit (`SuccessModel.revisit_weight`) — is at least `screen_below`, and
otherwise with probability `screen_keep`, so a prompt the policy starts to solve is noticed again. Prompts
never seen are always kept. The sampling layer draws replacements for skipped prompts, so each step still
plans its full number of prompts and rollouts; the kept prompts are then allocated as "vipfast" does.
"""

from __future__ import annotations

import json

import numpy as np

from .._validation import as_uint64_keys, is_real_number
from .registry import register
from .vip import VIPAllocator

__all__ = ["VIPScreenAllocator"]


class VIPScreenAllocator(VIPAllocator):
    """The "vipfast" preset plus a `screen` (see the module docstring).

    screen_below: weight E[p(1 − p)] under which a prompt counts as settled (0.05: p within about 0.05 of 0
    or 1 given the evidence); screen_keep: probability of keeping a settled prompt anyway (0.1);
    screen_seed: of the screening generator (its state is checkpointed). The defaults were chosen on the
    simulator's learning scenario (seeds 100–102; docs/choosing.md).
    """

    name = "vipfast-screen"

    def __init__(self, budget_per_prompt=8.0, *, screen_below: float = 0.05, screen_keep: float = 0.1,
                 screen_seed: int = 0, **options):
        if not (is_real_number(screen_below) and 0 < screen_below <= 0.25):
            raise ValueError(f"screen_below must be a number in (0, 0.25] (the largest p(1 - p)), got {screen_below!r}")
        if not (is_real_number(screen_keep) and 0 <= screen_keep <= 1):
            raise ValueError(f"screen_keep must be a number in [0, 1], got {screen_keep!r}")
        if isinstance(screen_seed, bool) or not isinstance(screen_seed, (int, np.integer)) or screen_seed < 0:
            raise ValueError(f"screen_seed must be a non-negative integer, got {screen_seed!r}")
        super().__init__(budget_per_prompt, **options)
        if not self.hierarchical:
            raise ValueError(f"a screen needs the per-prompt evidence of the 'vipfast' preset, got preset {self.preset!r}")
        self.name = "vipfast-screen"
        self.screen_below, self.screen_keep, self.screen_seed = float(screen_below), float(screen_keep), int(screen_seed)
        self.screen_rng = np.random.default_rng(self.screen_seed)
        self.last_skip_rate: float | None = None

    def init_options(self) -> dict:
        return dict(super().init_options(), screen_below=self.screen_below, screen_keep=self.screen_keep,
                    screen_seed=self.screen_seed)

    def screen(self, keys) -> np.ndarray:
        """bool [k]: True for prompts to roll out (one uniform draw per prompt, in order, whatever it decides)."""
        keys = as_uint64_keys(keys)
        with self._lock:
            draws = self.screen_rng.random(len(keys))
            keep = np.ones(len(keys), dtype=bool)
            if self.predictor is not None:
                settled = self.predictor.revisit_weight(keys) < self.screen_below  # NaN (never seen) is kept
                keep = ~settled | (draws < self.screen_keep)
            if len(keys):
                self.last_skip_rate = float(1.0 - keep.mean())
        return keep

    def rule_stats(self) -> dict:
        return dict(super().rule_stats(), skip_rate=self.last_skip_rate)

    def state_arrays(self) -> dict[str, np.ndarray]:
        skip_rate = np.nan if self.last_skip_rate is None else self.last_skip_rate
        return dict(super().state_arrays(), **{"screen/rng": np.array(json.dumps(self.screen_rng.bit_generator.state)),
                                              "screen/skip_rate": np.array(skip_rate)})

    def load_state_arrays(self, arrays, version) -> None:
        screen = {k: v for k, v in arrays.items() if k.startswith("screen/")}
        if set(screen) != {"screen/rng", "screen/skip_rate"}:
            raise ValueError(f"screen entries {sorted(screen)} differ from ['screen/rng', 'screen/skip_rate']")
        super().load_state_arrays({k: v for k, v in arrays.items() if not k.startswith("screen/")}, version)
        self.screen_rng.bit_generator.state = json.loads(str(arrays["screen/rng"]))
        skip_rate = np.asarray(arrays["screen/skip_rate"], dtype=np.float64)
        if skip_rate.shape != () or not (np.isnan(skip_rate) or 0 <= skip_rate <= 1):
            raise ValueError(f"screen/skip_rate must be a share in [0, 1] or NaN, got {skip_rate!r}")
        self.last_skip_rate = None if np.isnan(skip_rate) else float(skip_rate)


register("vipfast-screen", VIPScreenAllocator,
         "VIP (vipfast preset) that skips prompts its predictor is confident are settled, before rollout",
         preset="vipfast")
