"""VIPGRPOTrainer end to end on CPU in seconds: a tiny random Llama, no downloads.

    pip install ".[trl]" && python docs/integrations/trl_example.py      # in a vipfast checkout; one round per step
    python docs/integrations/trl_example.py dynamic                        # DAPO's dynamic sampling

Swap in a real model (model="Qwen/Qwen2.5-0.5B-Instruct", processing_class=None) and a real
verifier for actual training; nothing else changes.
"""

import sys

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vipfast.integrations.trl import VIPGRPOConfig, VIPGRPOTrainer

# A byte-level tokenizer and a 2-layer Llama, built in code.
vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
vocab |= {"<eos>": len(vocab), "<pad>": len(vocab) + 1}
backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")
model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))

# Prompts the policy always solves ("easy"), never solves ("hard"), and sometimes does ("coin").
prompts = [f"{kind} {i}: {i} + {i + 1} =" for i in range(8) for kind in ("easy", "hard", "coin")]
dataset = Dataset.from_dict({"prompt": prompts})


def verifier(prompts, completions, **kwargs):
    """1.0 or 0.0 per completion; the 'coin' prompts pass when the completion's byte sum is even."""
    return [1.0 if p.startswith("easy") else 0.0 if p.startswith("hard") else float(sum(c.encode()) % 2 == 0)
            for p, c in zip(prompts, completions)]


args = VIPGRPOConfig(
    output_dir="vip-grpo-example", max_steps=5, per_device_train_batch_size=16, max_completion_length=8,
    learning_rate=1e-3, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
    num_generations=4,                  # now the MEAN rollouts per prompt: the budget is 16 rows per batch
    allocator="knapsack",               # "vipfast" (GP, default), "paper", "knapsack" or "uniform"
    allocator_embedder="hashing",       # "minilm" (default, the minilm extra) for real prompts
    advantage_estimator="rloo",         # or "grpo" / "drgrpo" (default from scale_rewards)
    min_rollouts=2, max_rollouts=10,
    sampling=sys.argv[1] if len(sys.argv) > 1 else "single",   # "dynamic", "reinforce_ada", "pods", "vip_rounds"
)
trainer = VIPGRPOTrainer(model=model, reward_funcs=verifier, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
trainer.train()
batch = trainer.last_batch
print("last batch:", list(zip(batch.prompts.texts, batch.group_sizes.tolist())))
print(f"generated {batch.generated_rollouts} rollouts in {batch.rounds} round(s) from {batch.prompts_drawn} prompts; "
      f"{batch.trained_rollouts} train")
