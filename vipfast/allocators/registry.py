"""The one list of allocator names: make_allocator, load_allocator, configs, the CLI and the adapters read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .checkpoint import read_checkpoint

__all__ = ["register", "allocator_names", "make_allocator", "load_allocator", "allocator_class"]


@dataclass(frozen=True)
class _Entry:
    cls: type
    fixed: dict = field(default_factory=dict)  # options the name implies (a preset)
    description: str = ""


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, cls: type, description: str, **fixed) -> None:
    """Make `name` build `cls(**fixed, **options)`; every rule's module registers itself once."""
    if name in _REGISTRY:
        raise ValueError(f"allocator {name!r} is registered twice")
    _REGISTRY[name] = _Entry(cls, fixed, description)


def allocator_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def describe_allocators() -> dict[str, str]:
    """name -> one-line description, for help texts."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def allocator_class(name: str) -> type:
    return _entry(name).cls


def _entry(name) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"allocator must be one of {allocator_names()}, got {name!r}")
    return _REGISTRY[name]


def make_allocator(name: str, **options):
    """Build an allocator by name; options are the shared ones (budget, bounds, estimator, embedder...)
    plus the rule's own. Unknown options raise TypeError naming them."""
    entry = _entry(name)
    clash = sorted(set(entry.fixed) & set(options))
    if clash:
        raise TypeError(f"allocator {name!r} fixes {clash}; choose another allocator name instead")
    allocator = entry.cls(**entry.fixed, **options)
    allocator.name = name
    return allocator


def load_allocator(path, **overrides):
    """Any allocator saved by `.save(path)`, ready to plan exactly as it would have.

    overrides: constructor options to replace, e.g. `embedder=` for a custom embedder object that
    could not be saved. A file that is not such a checkpoint raises ValueError naming the file and why.
    """
    checkpoint = read_checkpoint(path)
    name = checkpoint.allocator
    if name not in _REGISTRY:
        raise ValueError(f"{path} holds an unknown allocator {name!r}; this vipfast has {allocator_names()}")
    entry = _REGISTRY[name]
    options = {**checkpoint.config, **checkpoint.init, **overrides}
    for key in entry.fixed:
        options.pop(key, None)
    try:
        allocator = make_allocator(name, **options)
        allocator._restore(checkpoint)
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{path} holds a {name!r} allocator this vipfast cannot restore: {error}") from None
    return allocator
