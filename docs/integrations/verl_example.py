"""The verl recipe on one CPU, without Ray workers or a model: plan, repeat, balance, advantages, update.

    pip install ".[verl]" && python docs/integrations/verl_example.py     # in a vipfast checkout

Generation and the reward function are stood in for by random responses and a coin per
prompt, so that the example runs anywhere; in verl they are the rollout workers and the reward
manager (docs/integrations/verl.md shows where each call goes in RayPPOTrainer.fit).
"""

import uuid

import numpy as np
import torch
from verl import DataProto

import vipfast
from vipfast.integrations import verl as vip_verl

ROLLOUT_N, DP_SIZE, PROMPT_LEN, RESPONSE_LEN = 8, 4, 16, 32
rng = np.random.default_rng(0)
allocator = vipfast.make_allocator("knapsack", budget_per_prompt=ROLLOUT_N,  # or "vipfast" (GP), "beta", ...
                                 estimator="grpo", min_rollouts=3, max_rollouts=24)
dataset = [f"What is {a} + {b}?" for a, b in rng.integers(0, 50, (24, 2))]
solve_rate = {q: rng.beta(0.5, 0.5) for q in dataset}  # the stand-in policy's success rate per prompt

for step in range(4):
    questions = list(rng.choice(dataset, 16, replace=False))
    chats = np.empty(len(questions), dtype=object)
    chats[:] = [[{"role": "user", "content": q}] for q in questions]
    batch = DataProto.from_single_dict({
        "input_ids": torch.randint(0, 1000, (len(questions), PROMPT_LEN)),
        "attention_mask": torch.ones(len(questions), PROMPT_LEN, dtype=torch.int64),
        "raw_prompt": chats,
    })
    batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in questions], dtype=object)

    plan = vip_verl.plan_rollouts(allocator, batch, multiple_of=DP_SIZE)  # verl: after the uids
    batch = plan.repeat(batch)                                           # verl: batch.repeat(n, interleave=True)

    # stand-in for generation and the reward function
    rows = len(batch)
    lengths = torch.from_numpy(rng.integers(1, RESPONSE_LEN + 1, rows))
    response_mask = (torch.arange(RESPONSE_LEN)[None, :] < lengths[:, None]).to(torch.int64)
    batch.batch["responses"] = torch.randint(0, 1000, (rows, RESPONSE_LEN))
    batch.batch["attention_mask"] = torch.cat([batch.batch["attention_mask"], response_mask], dim=1)
    batch.batch["response_mask"] = response_mask
    p = np.array([solve_rate[q] for q in questions])
    success = rng.random(rows) < np.repeat(p, plan.counts)
    scores = torch.zeros(rows, RESPONSE_LEN)
    scores[torch.arange(rows), lengths - 1] = torch.from_numpy(success.astype(np.float32))
    batch.batch["token_level_scores"] = scores
    batch.batch["token_level_rewards"] = scores

    balance = vip_verl.balance_batch(batch, DP_SIZE)          # verl: self._balance_batch(batch, metrics)
    vip_verl.update_allocator(allocator, batch, plan)         # new: after the rewards
    batch = vip_verl.compute_advantage(batch, "grpo")         # verl: compute_advantage(batch, ...)
    print(f"step {step}: rollouts per prompt {plan.counts.tolist()} (total {plan.total}), "
          f"tokens per rank {balance['tokens']}, |advantage| mean {batch.batch['advantages'].abs().mean():.3f}")
