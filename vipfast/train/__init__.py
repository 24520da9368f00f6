"""The vipfast trainer: vLLM (or HF) generation, VIP allocation, ragged GRPO/RLOO updates in torch.

Needs the `train` extra (torch, transformers, pyyaml, matplotlib; `datasets` and `math-verify` for
real data). `vipfast train [--config FILE]` runs it; docs/trainer.md describes it.
"""

from .config import TrainConfig, load_config
from .trainer import PreparedRun, Trainer, describe_last_checkpoint, prepare_run, train

__all__ = ["TrainConfig", "Trainer", "PreparedRun", "load_config", "prepare_run", "describe_last_checkpoint", "train"]
