"""The policy: a tiny Llama built in code with a character tokenizer, or any local HF model directory.

The embedded default needs no download: the tokenizer is a `tokenizers` word-level model over
single characters, the model a `LlamaForCausalLM` from a config. A short supervised warm start on
freshly generated arithmetic makes it partly competent (RL from a policy that solves nothing has
no signal); the result is saved as an ordinary HF model directory (what vLLM loads) under the
cache, keyed by a hash of everything that determines it, so later runs and tests reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import ModelConfig
from .task import REVERSED_ANSWER_MARK, training_problems

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
CHARACTERS = "0123456789+-*= " + REVERSED_ANSWER_MARK
WARM_START_VERSION = 2  # bump when the warm-start recipe changes, so old caches are not reused
TINY_MAX_POSITIONS = 64  # BOS + prompt + response tokens; vLLM refuses sequences longer than the model's positions


def cache_dir() -> Path:
    return Path(os.environ.get("VIPFAST_CACHE") or Path.home() / ".cache" / "vipfast")


def build_tokenizer():
    """Character-level fast tokenizer (BOS prepended), as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def build_tiny_llama(config: ModelConfig, vocab_size: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    llama = LlamaConfig(vocab_size=vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                        num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
                        intermediate_size=config.intermediate_size, max_position_embeddings=TINY_MAX_POSITIONS,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(llama).float()


def warm_start_key(config: ModelConfig) -> str:
    recipe = dict(version=WARM_START_VERSION, characters=CHARACTERS, hidden_size=config.hidden_size,
                  num_layers=config.num_layers, num_heads=config.num_heads,
                  intermediate_size=config.intermediate_size, steps=config.warmup_steps,
                  batch=config.warmup_batch, lr=config.warmup_lr)
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def policy_directory(config: ModelConfig) -> Path:
    """The HF model directory the run starts from: model.path, or the cached warm-started tiny model."""
    if config.kind == "path":
        return Path(config.path)
    directory = cache_dir() / f"tiny-arithmetic-{warm_start_key(config)}"
    if not (directory / "config.json").is_file():
        _warm_start_into(directory, config)
    return directory


def _warm_start_into(directory: Path, config: ModelConfig) -> None:
    """Supervised warm start, written atomically (a temporary directory renamed into place)."""
    tokenizer = build_tokenizer()
    model = build_tiny_llama(config, vocab_size=len(tokenizer), seed=0)
    supervised_warm_start(model, tokenizer, config)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, directory)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (directory / "config.json").is_file():  # another process may have won the race
            raise


def supervised_warm_start(model, tokenizer, config: ModelConfig) -> None:
    """Next-token loss on answer tokens of random problems (prompt tokens are context only), none of
    them a possible held-out problem, so held-out accuracy measures what the policy can compute."""
    rng = np.random.default_rng(0x5F7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.warmup_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(config.warmup_steps, 1))
    model.train()
    for _ in tqdm(range(config.warmup_steps), desc="warm start (supervised)", unit="step", file=sys.stderr):
        problems = training_problems(config.warmup_batch, rng)
        batch = encode_pairs(tokenizer, [p for p, _ in problems], [a for _, a in problems])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                                 ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


def encode_pairs(tokenizer, prompts, answers) -> dict[str, torch.Tensor]:
    """Right-padded prompt+answer+EOS ids, mask, and labels that are -100 outside the answer."""
    rows, labels = [], []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_ids + answer_ids)
        labels.append([-100] * len(prompt_ids) + answer_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    return dict(input_ids=torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
                attention_mask=torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
                labels=torch.tensor([l + [-100] * (width - len(l)) for l in labels]))


def load_policy(directory: Path, device: str):
    """(model float32 in train mode, tokenizer) from an HF model directory; never touches the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).train(), tokenizer
