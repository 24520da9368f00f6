"""Token log-probabilities of sampled responses and the policy-gradient loss over ragged groups."""

from __future__ import annotations

import torch


def pack_sequences(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, device) -> dict:
    """Right-padded prompt+response rows and where each response starts.

    input_ids [N, T], attention_mask [N, T], prompt_lengths [N], response_lengths [N]
    """
    rows = [p + r for p, r in zip(prompt_ids, response_ids)]
    width = max(map(len, rows))
    return dict(
        input_ids=torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], device=device),
        attention_mask=torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=device),
        prompt_lengths=torch.tensor([len(p) for p in prompt_ids], device=device),
        response_lengths=torch.tensor([len(r) for r in response_ids], device=device),
    )


def response_logprobs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(token) [N, L], mask [N, L]) for each response token; L = longest response.

    Token k of response i sits at column prompt_length_i + k and is predicted by the logits one
    column to its left.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [N, T, V]
    lengths = batch["response_lengths"]
    width = int(lengths.max())
    steps = torch.arange(width, device=logits.device)
    mask = steps[None, :] < lengths[:, None]  # [N, L]
    target_columns = (batch["prompt_lengths"][:, None] + steps[None, :]).clamp(max=logits.shape[1] - 1)
    rows = torch.arange(len(lengths), device=logits.device)[:, None]
    predicting = logits[rows, target_columns - 1].float()  # [N, L, V]: only the columns that score a response token
    targets = batch["input_ids"][rows, target_columns]  # [N, L]
    logprobs = torch.log_softmax(predicting, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    return torch.where(mask, logprobs, torch.zeros((), device=logprobs.device)), mask


def policy_gradient_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, token_advantages: torch.Tensor,
                         mask: torch.Tensor, *, clip_eps: float | None, aggregation: str,
                         max_new_tokens: int, prompts: torch.Tensor | None = None) -> torch.Tensor:
    """Token-level surrogate: −Σ_tokens min(ρ·A, clip(ρ, 1±ε)·A) / normaliser, ρ = π/π_old.

    logprobs, old_logprobs, token_advantages, mask: [N, L]. With old_logprobs = logprobs.detach()
    (one pass per batch) ρ = 1 and the gradient is REINFORCE with the group baseline.
    aggregation "token-mean": divide by the number of response tokens in the batch (DAPO);
    "token-sum": by N · max_new_tokens, a constant, so long answers are not down-weighted (Dr. GRPO);
    "prompt-mean": rollout i of prompt q weighs 1 / (Q · n_q) and its tokens are summed, over max_new_tokens:
    (1/Q) Σ_q (1/n_q) Σ_i Σ_t (...) / max_new_tokens, every prompt weighted equally whatever its number of
    rollouts n_q (the estimator VIP's allocation minimises the variance of). prompts: int64 [N], the prompt
    of each row (any labels), needed for "prompt-mean".
    """
    ratio = torch.exp(logprobs - old_logprobs)
    surrogate = ratio * token_advantages
    if clip_eps is not None:
        surrogate = torch.minimum(surrogate, ratio.clamp(1 - clip_eps, 1 + clip_eps) * token_advantages)
    if aggregation == "prompt-mean":
        if prompts is None or prompts.shape != (mask.shape[0],):
            raise ValueError(f"aggregation 'prompt-mean' needs the prompt of each of the {mask.shape[0]} rows")
        _, row_prompt, rollouts = torch.unique(prompts, return_inverse=True, return_counts=True)
        weights = 1.0 / (len(rollouts) * rollouts[row_prompt].to(surrogate.dtype))  # [N]
        return -((surrogate * mask).sum(1) * weights).sum() / max_new_tokens
    total = -(surrogate * mask).sum()
    if aggregation == "token-mean":
        return total / mask.sum().clamp(min=1)
    if aggregation == "token-sum":
        return total / (mask.shape[0] * max_new_tokens)
    raise ValueError(f"aggregation must be 'token-mean', 'token-sum' or 'prompt-mean', got {aggregation!r}")
