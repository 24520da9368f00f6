"""What the adapters hand vipfast's sampling modes as their prompt source: the step's own prompts, then refills."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vipfast._validation import as_uint64_keys
from vipfast.embedders import prompt_keys
from vipfast.sampling import Prompts

from ._prompts import prompt_text

__all__ = ["RefillOrder", "StepSource", "prompt_identities"]


class RefillOrder:
    """Dataset indices for refills: epoch after epoch, a seeded permutation of range(size) (in order when
    shuffle=False). `state_dict()` / `load_state_dict()` resume the walk exactly."""

    def __init__(self, size: int, *, seed: int = 0, shuffle: bool = True):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"a refill order needs a dataset of at least one row, got size {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.size, self.seed, self.shuffle = int(size), int(seed), bool(shuffle)
        self.epoch, self.position = 0, 0
        self._cached: tuple[int, np.ndarray] | None = None  # (epoch, its order)

    def take(self, count: int) -> np.ndarray:
        """The next `count` indices, int64 [count], crossing epochs as needed."""
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        parts, count = [], int(count)
        while count:
            order = self._order()
            part = order[self.position:self.position + count]
            parts.append(part)
            count -= len(part)
            self.position += len(part)
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _order(self) -> np.ndarray:
        if self._cached is None or self._cached[0] != self.epoch:
            order = np.arange(self.size, dtype=np.int64)
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size).astype(np.int64)
            self._cached = (self.epoch, order)
        return self._cached[1]

    def state_dict(self) -> dict:
        return dict(size=self.size, seed=self.seed, shuffle=self.shuffle, epoch=self.epoch, position=self.position)

    def load_state_dict(self, state: dict) -> None:
        """Resume a saved walk; a walk over another dataset size, seed or shuffle raises ValueError."""
        saved = {key: state.get(key) for key in ("size", "seed", "shuffle")}
        mine = dict(size=self.size, seed=self.seed, shuffle=self.shuffle)
        if saved != mine:
            raise ValueError(f"the saved refill order walks {saved}, this one {mine}: the dataset or seed changed")
        epoch, position = state.get("epoch"), state.get("position")
        if not (isinstance(epoch, int) and epoch >= 0 and isinstance(position, int) and 0 <= position < self.size):
            raise ValueError(f"a refill order state needs epoch >= 0 and 0 <= position < {self.size}, got {state}")
        self.epoch, self.position = epoch, position


class StepSource:
    """A PromptSource for one step: the step's own prompts first, then those `refill(count)` supplies.

    texts / keys: the step's prompts (texts may be None when prompts are identified by keys alone).
    refill(count) -> (texts or None, keys) of up to `count` further prompts (more are kept for later
    draws), or None once the data ran out. Prompt i of the source (in the order supplied) has id i, so
    the caller keeps its rows in the same order: its own first, then each refill's.
    """

    def __init__(self, texts: Sequence[str] | None, keys, refill: Callable[[int], tuple | None] | None = None):
        self.texts = None if texts is None else list(texts)
        self.keys = as_uint64_keys(keys)
        if self.texts is not None and len(self.texts) != len(self.keys):
            raise ValueError(f"{len(self.texts)} prompt texts but {len(self.keys)} keys")
        self.refill = refill
        self.drawn = 0

    def _add(self, refilled) -> None:
        if refilled is None:
            self.refill = None  # the data ran out: later draws return what is left
            return
        texts, keys = refilled
        if (texts is None) != (self.texts is None):
            raise ValueError("refill prompts must be identified like the step's own: texts for texts, keys for keys")
        self.keys = np.concatenate([self.keys, as_uint64_keys(keys)])
        if texts is not None:
            self.texts += list(texts)
            if len(self.texts) != len(self.keys):
                raise ValueError(f"refill returned {len(texts)} prompt texts for {len(keys)} keys")

    def __len__(self) -> int:
        """Prompts supplied so far (the step's own and every refill's)."""
        return len(self.keys)

    def draw(self, count: int) -> Prompts:
        missing = self.drawn + count - len(self.keys)
        if missing > 0 and self.refill is not None:
            self._add(self.refill(missing))
        ids = np.arange(self.drawn, min(self.drawn + count, len(self.keys)), dtype=np.int64)
        self.drawn += len(ids)
        texts = None if self.texts is None else tuple(self.texts[i] for i in ids.tolist())
        return Prompts(ids=ids, keys=self.keys[ids], texts=texts)


def prompt_identities(prompts) -> tuple[list[str], np.ndarray]:
    """(texts, uint64 keys) of prompts in TRL's or verl's formats: strings or chat messages."""
    texts = [prompt_text(prompt) for prompt in prompts]
    return texts, prompt_keys(texts)
