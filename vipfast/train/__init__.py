"""The vipfast trainer: vLLM (or HF) generation, VIP allocation, ragged GRPO/RLOO updates in torch.

Needs the `train` extra (torch, transformers, pyyaml, matplotlib; `datasets` and `math-verify` for
real data). `vipfast train [--config FILE]` runs it; docs/trainer.md describes it.
"""

from .config import TrainConfig, load_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "load_config", "train"]
