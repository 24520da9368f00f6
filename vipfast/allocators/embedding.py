"""Prompt embeddings for the rules that predict from them: computed once per prompt, or given by the caller."""

from __future__ import annotations

import numpy as np

from ..embedders import EmbeddingCache, make_embedder

__all__ = ["PromptEmbeddings"]


class PromptEmbeddings:
    """embedder: "minilm", "hashing", an object with `dim` and `__call__(texts)`, or None (callers pass embeddings=).

    The embedder is built on first use, so an allocator loads without its model until it plans.
    """

    def __init__(self, embedder="minilm", dim=None, cache_size=1 << 16):
        self.spec = embedder if isinstance(embedder, str) or embedder is None else None
        self._object = None if self.spec is not None or embedder is None else make_embedder(embedder)
        self.dim = None if dim is None else int(dim)
        self.cache_size = int(cache_size)
        self._cache = None

    def options(self) -> dict:
        """What a checkpoint can hold (a custom embedder object is supplied again at load)."""
        return dict(embedder=self.spec, embedding_dim=self.dim, embedding_cache_size=self.cache_size)

    def unsaved_options(self) -> dict:
        return {} if self._object is None else {"embedder": self._object}

    def __call__(self, keys: np.ndarray, prompts, embeddings) -> np.ndarray:
        if embeddings is not None:
            x = np.asarray(embeddings, dtype=np.float32)
            if x.ndim != 2 or len(x) != len(keys):
                raise ValueError(f"embeddings must be [Q={len(keys)}, d], got shape {x.shape}")
        elif prompts is None:
            raise ValueError("this allocator predicts from embeddings: pass prompt texts or embeddings=")
        else:
            x = self._embedding_cache()(keys, prompts)
        if self.dim is None:
            self.dim = x.shape[1]
        elif x.shape[1] != self.dim:
            raise ValueError(f"embeddings have width {x.shape[1]}, but this allocator's are {self.dim} wide")
        return x

    def _embedding_cache(self) -> EmbeddingCache:
        if self._cache is None:
            if self._object is None and self.spec is None:
                raise ValueError("this allocator has no embedder: pass embeddings=, or construct/load it with embedder=")
            self._cache = EmbeddingCache(self._object or make_embedder(self.spec), self.cache_size)
        return self._cache
