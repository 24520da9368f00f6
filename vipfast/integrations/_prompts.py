"""Prompt text for the allocator, from the prompt formats TRL and verl datasets carry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def prompt_text(prompt) -> str:
    """The text that identifies a prompt to the allocator (its key and its embedding).

    A plain string is used as is. A chat (a list of {"role", "content"} messages, as in TRL's
    conversational datasets and verl's `raw_prompt`) becomes one line per message,
    "role: content", with the text parts of multimodal content joined; the role is kept so
    that the same words as a system prompt and as a user turn are different prompts.
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, np.ndarray):
        prompt = prompt.tolist()
    if isinstance(prompt, Sequence) and all(isinstance(m, Mapping) and "content" in m for m in prompt):
        return "\n".join(f"{m.get('role', 'user')}: {_content_text(m['content'])}" for m in prompt)
    raise ValueError(f"a prompt must be a string or a list of chat messages with 'content', got {type(prompt).__name__}: "
                     f"{str(prompt)[:80]!r}")


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # multimodal content blocks: keep the text ones
        return " ".join(part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text")
    raise ValueError(f"message content must be a string or a list of content blocks, got {type(content).__name__}")
