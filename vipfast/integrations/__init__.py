"""Adapters that run vipfast's allocation inside other RL trainers.

- `vipfast.integrations.trl`: `VIPGRPOTrainer` / `VIPGRPOConfig`, a TRL GRPOTrainer with ragged
  groups and vipfast's sampling modes, DAPO's dynamic sampling among them (`pip install vipfast[trl]`,
  docs/integrations/trl.md).
- `vipfast.integrations.verl`: functions a verl trainer calls to plan (honouring a screening rule,
  with refills), repeat, balance, compute advantages and update the allocator
  (`pip install vipfast[verl]`, docs/integrations/verl.md).

Each submodule imports its framework on import; this package imports neither.
"""

from ._prompts import prompt_text

__all__ = ["prompt_text"]
