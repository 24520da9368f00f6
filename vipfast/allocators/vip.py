"""VIP (arXiv 2602.01601): a success predictor over prompt embeddings + the exact solver.

Presets:
- "vipfast" (default): SuccessModel, a logit that is a GP over embeddings (the shared prior) plus a
  per-prompt random effect whose posterior comes from that prompt's own counts, kept for every prompt
  seen; the GP's prior variance and recalibration chosen online by the allocation loss. It reduces to a
  per-prompt counter when embeddings carry nothing and to the GP when prompts never repeat.
- "gp": the SuccessGP alone (Laplace sites, signal variance 64, forgetting 0.99, fast engine, logit
  recalibration), which forgets a prompt once its bounded key store evicts it.
- "paper": the published VIP code's predictor: fixed bandwidth 0.27, prior mean −5, clipped-rate logits
  as near-noiseless observations, a last-step fit, sigmoid of the posterior mean, plug-in p(1 − p).
The first two weigh prompts by E[p(1 − p)] under the posterior. docs/allocators.md compares the presets,
docs/success_model.md and docs/success_gp.md explain the predictors.
"""

from __future__ import annotations

import numpy as np

from ..success_gp import SuccessGP
from ..success_model import SuccessModel
from .base import AllocatorBase, Weighing
from .embedding import PromptEmbeddings
from .registry import register

__all__ = ["VIPAllocator", "PRESETS"]

# Evidence one step old keeps this weight in "paper": older evidence is negligible (a last-step fit).
PAPER_FORGETTING = 1e-3

PRESETS = {
    "vipfast": dict(model=dict(), weights="expected"),
    "gp": dict(gp=dict(noise="laplace", signal_var=64.0, forgetting=0.99, mode="fast", calibration_window=10),
               weights="expected"),
    "paper": dict(gp=dict(lengthscale=0.27, prior_mean=-5.0, noise="fixed", jitter=1e-4, clip=1e-6, proba="plugin",
                          forgetting=PAPER_FORGETTING), weights="plugin"),
}


class VIPAllocator(AllocatorBase):
    """Predict each prompt's success probability from its embedding (and history), then solve exactly.

    preset: "vipfast", "gp" or "paper" (PRESETS); gp_options override the preset's SuccessGP options
    (for "vipfast", those of its shared GP), model_options the SuccessModel's.
    embedder: "minilm", "hashing", an embedder object, or None when plan() always gets embeddings=.
    """

    name = "vipfast"

    def __init__(self, budget_per_prompt=8.0, *, preset="vipfast", gp_options=None, model_options=None,
                 embedder="minilm",
                 embedding_dim=None, embedding_cache_size=1 << 16, **options):
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
        super().__init__(budget_per_prompt=budget_per_prompt, **options)
        self.preset = preset
        self.name = preset
        self.embeddings = PromptEmbeddings(embedder, embedding_dim, embedding_cache_size)
        self.hierarchical = "model" in PRESETS[preset]
        self.gp_options = {**PRESETS[preset].get("gp", {}), **(gp_options or {})}
        self.model_options = {**PRESETS[preset].get("model", {}), **(model_options or {})}
        self.predictor = None
        if embedding_dim is not None:
            self.predictor = self._new_predictor(int(embedding_dim))

    def init_options(self) -> dict:
        return dict(preset=self.preset, gp_options=self.gp_options, model_options=self.model_options,
                    **self.embeddings.options())

    def unsaved_options(self) -> dict:
        return self.embeddings.unsaved_options()

    def _new_predictor(self, dim: int):
        if self.hierarchical:
            return SuccessModel(dim, gp_options=self.gp_options, **self.model_options)
        return SuccessGP(dim, **self.gp_options)

    def _predictor(self, dim: int):
        if self.predictor is None:
            self.predictor = self._new_predictor(dim)
        return self.predictor

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        x = self.embeddings(keys, prompts, embeddings)
        prediction = self._predictor(x.shape[1]).predict(keys, x)
        p = prediction.proba
        weights = prediction.weight if PRESETS[self.preset]["weights"] == "expected" else p * (1 - p)
        return Weighing(p=p, weights=weights, embeddings=x, prediction=prediction)

    def learn(self, plan, successes, trials) -> None:
        if plan.embeddings is None:
            raise ValueError("this plan carries no embeddings: update a VIPAllocator with the Plan its plan() returned")
        predictor = self._predictor(plan.embeddings.shape[1])
        predictor.observe(plan.keys, plan.embeddings, successes, trials, prediction=plan.prediction)

    def advance(self) -> None:
        if self.predictor is not None:
            self.predictor.advance()

    def rule_stats(self) -> dict:
        if self.predictor is None:
            return dict(prompts_held=0)
        if self.hierarchical:
            return self.predictor.stats()
        offset, scale = self.predictor.calibration
        return dict(prompts_held=self.predictor.num_stored, calibration=dict(offset=offset, scale=scale))

    def state_arrays(self) -> dict[str, np.ndarray]:
        if self.predictor is None:
            return {}
        if self.hierarchical:
            return {f"model/{k}": v for k, v in self.predictor.state_arrays().items()}
        return {f"gp/{k}": np.asarray(v) for k, v in self.predictor.state_dict().items()}

    def load_state_arrays(self, arrays, version) -> None:
        if self.hierarchical and arrays:
            model = {k.removeprefix("model/"): v for k, v in arrays.items() if k.startswith("model/")}
            dim = int(model["gp/dim"])
            self.predictor = self._new_predictor(dim)
            self.predictor.load_state_arrays(model)
            self.embeddings.dim = dim
            return
        gp_state = {k.removeprefix("gp/"): v for k, v in arrays.items() if k.startswith("gp/")}
        unknown = [k for k in arrays if not k.startswith(("gp/", "planned/"))]  # version 1 kept planned embeddings
        if unknown:
            raise ValueError(f"unexpected state entries {unknown} for allocator {self.name!r}")
        if gp_state:
            self.predictor = SuccessGP.from_state_dict({k: (v.item() if v.ndim == 0 else v) for k, v in gp_state.items()})
            self.embeddings.dim = self.predictor.dim


for _preset in PRESETS:
    register(_preset, VIPAllocator, f"VIP: SuccessGP over embeddings ({_preset} preset) + exact solver", preset=_preset)
