"""VIPGRPOTrainer: real TRL training steps on CPU with a tiny Llama built in code (no downloads)."""

from collections import Counter

import numpy as np
import pytest
import torch

pytest.importorskip("trl", reason="TRL is not installed: pip install '.[trl]'")

from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

import vipfast  # noqa: E402
from vipfast.integrations.trl import ALLOCATOR_CHECKPOINT, VIPGRPOConfig, VIPGRPOTrainer  # noqa: E402

pytestmark = pytest.mark.slow

# Prompts whose reward the policy cannot change (always / never solved) and ones it depends on.
PROMPTS = ["always: 2 + 2 =", "never: 7 * 8 =", "coin: 5 - 3 =", "coin: 9 / 3 ="]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with no merges: 256 byte tokens plus <eos> and <pad>."""
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab |= {"<eos>": len(vocab), "<pad>": len(vocab) + 1}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>")


def tiny_llama(tokenizer, hidden_size=32) -> LlamaForCausalLM:
    """Two layers, four heads (vLLM's CPU attention needs head_dim = hidden_size / 4 >= 32)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)


def outcome_reward(prompts, completions, **kwargs):
    """1/0 for the always/never prompts; for the coin prompts, whether the completion has an even byte sum."""
    rewards = []
    for prompt, completion in zip(prompts, completions):
        if prompt.startswith("always"):
            rewards.append(1.0)
        elif prompt.startswith("never"):
            rewards.append(0.0)
        else:
            rewards.append(float(sum(completion.encode()) % 2 == 0))
    return rewards


def common_args(tmp_path, **overrides):
    args = dict(output_dir=str(tmp_path), per_device_train_batch_size=16, num_generations=4, max_completion_length=6,
                max_steps=3, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                seed=0, data_seed=0, temperature=1.0, beta=0.0, shuffle_dataset=False)
    return {**args, **overrides}


def run(trainer_class, config_class, tmp_path, reward_funcs, **overrides):
    tokenizer = byte_tokenizer()
    trainer = trainer_class(model=tiny_llama(tokenizer), reward_funcs=reward_funcs,
                            args=config_class(**common_args(tmp_path, **overrides)),
                            train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}), processing_class=tokenizer)
    trainer.train()
    return trainer


class AdvantageRecorder(VIPGRPOTrainer):
    """Keeps the advantages each generation batch hands to the loss (this process's rows)."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.advantages = getattr(self, "advantages", []) + [output["advantages"].tolist()]
        return output


def test_counts_follow_the_plan_and_training_runs(tmp_path):
    seen = []  # per generation batch: (rollouts per prompt the reward function saw, the trainer's plan)

    def recording_reward(prompts, completions, **kwargs):
        seen.append((Counter(prompts), dict(zip(trainer_box[0].last_plan.prompts, trainer_box[0].last_plan.counts))))
        return outcome_reward(prompts, completions)

    trainer_box = []  # the reward function reads the plan of the batch it is scoring

    tokenizer = byte_tokenizer()
    args = VIPGRPOConfig(**common_args(tmp_path, max_steps=4), allocator="knapsack", advantage_estimator="rloo",
                         min_rollouts=2, max_rollouts=10)
    trainer = VIPGRPOTrainer(model=tiny_llama(tokenizer), reward_funcs=recording_reward, args=args,
                             train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}), processing_class=tokenizer)
    trainer_box.append(trainer)
    result = trainer.train()

    assert len(seen) == 4  # one generation batch per step
    for rows_per_prompt, plan in seen:
        assert dict(rows_per_prompt) == {p: int(n) for p, n in plan.items()}
        assert sum(plan.values()) == 16
    # step 1 knows nothing (p = 1/2 everywhere: uniform); afterwards the settled prompts drop to the minimum
    assert set(seen[0][1].values()) == {4}
    later = seen[-1][1]
    assert later[PROMPTS[0]] == later[PROMPTS[1]] == 2
    assert later[PROMPTS[2]] + later[PROMPTS[3]] == 12
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and np.all(np.isfinite(losses))
    assert np.isfinite(result.training_loss)
    assert trainer.state.log_history[-2]["vipfast/rollouts_max"] >= 6


def test_uniform_allocator_reproduces_grpotrainer(tmp_path):
    plain = run(GRPOTrainer, GRPOConfig, tmp_path / "plain", outcome_reward)
    ours = run(VIPGRPOTrainer, VIPGRPOConfig, tmp_path / "vip", outcome_reward, allocator="uniform",
               min_rollouts=4, max_rollouts=4)
    # same seed, same equal groups: the same completions, rewards and advantages, step after step
    assert list(ours._logs["completion"]) == list(plain._logs["completion"])
    assert list(ours._logs["rewards"]["outcome_reward"]) == list(plain._logs["rewards"]["outcome_reward"])
    np.testing.assert_allclose(list(ours._logs["advantages"]), list(plain._logs["advantages"]), rtol=1e-5, atol=1e-6)
    assert np.any(np.abs(list(ours._logs["advantages"])) > 0)
    # the policy gradient itself: the GRPO loss is ~0 at ratio 1, its gradient is not
    plain_grads = [e["grad_norm"] for e in plain.state.log_history if "grad_norm" in e]
    ours_grads = [e["grad_norm"] for e in ours.state.log_history if "grad_norm" in e]
    assert len(ours_grads) == 3 and min(ours_grads) > 0
    np.testing.assert_allclose(ours_grads, plain_grads, rtol=1e-5)


def test_allocator_state_is_checkpointed_and_resumed(tmp_path):
    options = dict(allocator="knapsack", min_rollouts=3, max_rollouts=10, save_strategy="steps", save_steps=2)
    trainer = run(VIPGRPOTrainer, VIPGRPOConfig, tmp_path, outcome_reward, max_steps=2, **options)
    checkpoint = tmp_path / "checkpoint-2"
    restored = vipfast.load_allocator(checkpoint / ALLOCATOR_CHECKPOINT)
    assert len(restored.rates) == 4
    np.testing.assert_array_equal(restored.rates.read("rate", restored.rates.keys()),
                                  trainer.allocator.rates.read("rate", restored.rates.keys()))
    # a fresh trainer resumed from the checkpoint plans step 3 from the saved rates, not from scratch
    tokenizer = byte_tokenizer()
    resumed = VIPGRPOTrainer(model=tiny_llama(tokenizer), reward_funcs=outcome_reward,
                             args=VIPGRPOConfig(**common_args(tmp_path, max_steps=3, **options)),
                             train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}), processing_class=tokenizer)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    plan = dict(zip(resumed.last_plan.prompts, resumed.last_plan.counts.tolist()))
    assert plan[PROMPTS[0]] == plan[PROMPTS[1]] == 3 and sum(plan.values()) == 16


def test_config_rejects_what_ragged_groups_cannot_do(tmp_path):
    with pytest.raises(ValueError, match=r"budget per prompt \(4: .* \[6, 32\]"):
        VIPGRPOConfig(**common_args(tmp_path), min_rollouts=6)
    with pytest.raises(ValueError, match="scale_rewards='batch'"):
        VIPGRPOConfig(**common_args(tmp_path), scale_rewards="batch")
    with pytest.raises(ValueError, match="allocator must be one of"):
        VIPGRPOConfig(**common_args(tmp_path), allocator="greedy")
    with pytest.raises(ValueError, match="advantage_estimator must be one of"):
        VIPGRPOConfig(**common_args(tmp_path), advantage_estimator="ppo")


def test_unscorable_completions_get_zero_and_stay_out_of_the_baseline(tmp_path):
    scored = []

    def sometimes_unscorable(prompts, completions, **kwargs):
        rewards = [None if i % 5 == 0 else r for i, r in enumerate(outcome_reward(prompts, completions))]
        scored.append(rewards)
        return rewards

    tokenizer = byte_tokenizer()
    args = VIPGRPOConfig(**common_args(tmp_path, max_steps=2), allocator="knapsack", min_rollouts=3, max_rollouts=8)
    trainer = AdvantageRecorder(model=tiny_llama(tokenizer), reward_funcs=sometimes_unscorable, args=args,
                                train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}), processing_class=tokenizer)
    trainer.train()
    rewards, advantages = scored[-1], np.array(trainer.advantages[-1])
    counts = trainer.last_plan.counts
    unscorable = np.array([r is None for r in rewards])
    assert np.all(advantages[unscorable] == 0)
    group_of = np.repeat(np.arange(len(counts)), counts)
    sizes = np.bincount(group_of[~unscorable], minlength=len(counts))
    scorable_rewards = torch.tensor([r for r in rewards if r is not None])
    expected = vipfast.group_advantages(scorable_rewards, sizes[sizes > 0], estimator="grpo", eps=1e-4)
    np.testing.assert_allclose(advantages[~unscorable], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_two_processes_split_one_plan(tmp_path):
    """Two CPU processes (gloo): both split the same plan, each scores its half, advantages span both."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
               str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    for step0, step1 in zip(*ranks):
        assert step0["plan"] == step1["plan"]  # one plan, broadcast from the main process
        assert len(step0["prompts"]) == len(step1["prompts"]) == 8  # each rank: generation_batch_size / 2 rows
        plan = step0["plan"]
        assert Counter(step0["prompts"] + step1["prompts"]) == Counter(dict(zip(plan["prompts"], plan["counts"])))
        rewards = torch.tensor(step0["rewards"] + step1["rewards"])
        expected = vipfast.group_advantages(rewards, plan["counts"], estimator="grpo", eps=1e-4)
        np.testing.assert_allclose(step0["advantages"] + step1["advantages"], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert ranks[0][-1]["plan"]["counts"] != [4, 4, 4, 4]  # the allocator learned between steps


def _two_process_worker(out_dir: str) -> None:
    """Run by test_two_processes_split_one_plan under torch.distributed.run: record what this rank saw."""
    import json
    import pathlib

    steps = []

    def recording_reward(prompts, completions, **kwargs):
        rewards = outcome_reward(prompts, completions)
        plan = trainer.last_plan
        steps.append(dict(prompts=list(prompts), rewards=rewards,
                          plan=dict(prompts=list(plan.prompts), counts=plan.counts.tolist())))
        return rewards

    tokenizer = byte_tokenizer()
    args = VIPGRPOConfig(**common_args(out_dir, per_device_train_batch_size=8), allocator="knapsack", min_rollouts=3,
                         max_rollouts=8)
    trainer = AdvantageRecorder(model=tiny_llama(tokenizer), reward_funcs=recording_reward, args=args,
                                train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}), processing_class=tokenizer)
    trainer.train()
    for step, advantages in zip(steps, trainer.advantages):
        step["advantages"] = advantages
    rank = trainer.accelerator.process_index
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(steps))
    exit_worker()


def exit_worker() -> None:
    """End a two-process worker once both ranks wrote their results, skipping interpreter teardown.

    gloo's teardown (at exit, and inside destroy_process_group) aborted a rank now and then on a loaded
    machine ("terminate called without an active exception"); the test checks the written results, not
    how torch tears gloo down.
    """
    import os
    import sys

    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    import sys

    _two_process_worker(sys.argv[1])
