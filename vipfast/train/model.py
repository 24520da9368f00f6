"""The policy: a tiny Llama built in code with a character tokenizer, or any local HF model directory.

The embedded default needs no download: the tokenizer is a `tokenizers` word-level model over
single characters (plus, for a task that has them, whole phrases of its fixed wording, one token
each), the model a `LlamaForCausalLM` from a config. A short supervised warm start on freshly
generated problems of the task makes it partly competent (RL from a policy that solves nothing has
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
from .task import ARITHMETIC_RECIPE, TinyRecipe

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
WARM_START_VERSION = 2  # bump when the warm-start recipe changes, so old caches are not reused


def cache_dir() -> Path:
    return Path(os.environ.get("VIPFAST_CACHE") or Path.home() / ".cache" / "vipfast")


def build_tokenizer(recipe: TinyRecipe = ARITHMETIC_RECIPE):
    """Character-level fast tokenizer (BOS prepended), as a transformers PreTrainedTokenizerFast; each of the
    recipe's phrases is one token wherever it occurs (longest first)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    phrases = sorted(recipe.phrases, key=lambda phrase: (-len(phrase), phrase))
    vocab = {token: i for i, token in enumerate(dict.fromkeys((*SPECIAL_TOKENS, *recipe.characters, *phrases)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # "." as before for arithmetic (it has no newline); "[\s\S]" also matches a newline.
    pattern = "|".join([*map(_regex_literal, phrases), "[\\s\\S]"]) if phrases or "\n" in recipe.characters else "."
    core.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def _regex_literal(text: str) -> str:
    return "".join(f"\\x{{{ord(c):x}}}" if not (c.isalnum() or c == " ") else c for c in text)


def build_tiny_llama(config: ModelConfig, vocab_size: int, seed: int, max_positions: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    llama = LlamaConfig(vocab_size=vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                        num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
                        intermediate_size=config.intermediate_size, max_position_embeddings=max_positions,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(llama).float()


def warm_start_key(config: ModelConfig, recipe: TinyRecipe = ARITHMETIC_RECIPE) -> str:
    described = dict(version=WARM_START_VERSION, characters=recipe.characters, hidden_size=config.hidden_size,
                     num_layers=config.num_layers, num_heads=config.num_heads,
                     intermediate_size=config.intermediate_size, steps=config.warmup_steps,
                     batch=config.warmup_batch, lr=config.warmup_lr)
    if recipe.key:  # arithmetic's recipe has no key, and keeps the cache entries it always had
        described.update(task=recipe.key, phrases=list(recipe.phrases), positions=recipe.max_positions)
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def policy_directory(config: ModelConfig, recipe: TinyRecipe = ARITHMETIC_RECIPE) -> Path:
    """The HF model directory the run starts from: model.path, or the cached warm-started tiny model."""
    if config.kind == "path":
        return Path(config.path)
    kind = recipe.key.get("kind", "arithmetic")
    directory = cache_dir() / f"tiny-{kind.replace('_', '-')}-{warm_start_key(config, recipe)}"
    if not (directory / "config.json").is_file():
        _warm_start_into(directory, config, recipe)
    return directory


def _warm_start_into(directory: Path, config: ModelConfig, recipe: TinyRecipe) -> None:
    """Supervised warm start, written atomically (a temporary directory renamed into place)."""
    tokenizer = build_tokenizer(recipe)
    model = build_tiny_llama(config, vocab_size=len(tokenizer), seed=0, max_positions=recipe.max_positions)
    supervised_warm_start(model, tokenizer, config, recipe)
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


def supervised_warm_start(model, tokenizer, config: ModelConfig, recipe: TinyRecipe = ARITHMETIC_RECIPE) -> None:
    """Next-token loss on answer tokens of random problems (prompt tokens are context only), none of
    them a possible held-out problem, so held-out accuracy measures what the policy can compute."""
    rng = np.random.default_rng(0x5F7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.warmup_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(config.warmup_steps, 1))
    model.train()
    batches = recipe.batches(config.warmup_batch, rng)
    for _ in tqdm(range(config.warmup_steps), desc="warm start (supervised)", unit="step", file=sys.stderr):
        problems = next(batches)
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


def uses_chat_template(tokenizer, config: ModelConfig) -> bool:
    """Whether prompts go through the tokenizer's chat template (model.chat_template; only for model.kind 'path')."""
    if config.kind != "path" or config.chat_template is False:
        return False
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if config.chat_template is True and not has_template:
        raise ValueError(f"model.chat_template is true but the tokenizer in {config.path} has no chat template; set "
                         f"model.chat_template: auto or false")
    return has_template


def prompt_encoder(tokenizer, config: ModelConfig):
    """text -> the token ids the policy reads: the prompt as a user message in the chat template (after
    model.system_prompt, if any) when `uses_chat_template`, else the prompt tokenized as is."""
    if not uses_chat_template(tokenizer, config):
        return lambda text: tokenizer(text)["input_ids"]
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []

    def encode(text: str) -> list[int]:
        rendered = tokenizer.apply_chat_template(system + [{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return tokenizer(rendered, add_special_tokens=False)["input_ids"]  # the template writes its own BOS

    return encode


def load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(directory: Path, device: str):
    """(model float32 in train mode, tokenizer) from an HF model directory; never touches the network."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True)
    return model.to(device).train(), load_tokenizer(directory)
