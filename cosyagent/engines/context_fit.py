"""A conversation longer than the LLM's context is read from its most recent part.

An endpoint refuses a request whose prompt does not fit its context window (llama-server: "request
(N tokens) exceeds the available context size (M tokens)"; OpenAI and vLLM: "maximum context
length", code ``context_length_exceeded``). The LLM client then leaves out the older half of the
history and asks again, until the request fits or only the newest message is left: what OpenAI's
Realtime API does by default (``truncation: "auto"``), where a refused request would fail every
reply of a long conversation from then on.
"""

from __future__ import annotations

from collections.abc import Sequence

import openai

from cosyagent.engines.base import ChatMessage

_OVERFLOW_WORDS = ("context size", "context length", "context window")


def is_context_overflow(exc: openai.BadRequestError) -> bool:
    """The endpoint refused the prompt as longer than its context."""
    return exc.code == "context_length_exceeded" or any(words in exc.message.lower() for words in _OVERFLOW_WORDS)


def without_older_half(messages: Sequence[ChatMessage]) -> list[ChatMessage] | None:
    """``messages`` with the older half of the history (all but the leading system messages) left
    out, starting at a user message where one is left, never at a tool result whose call went;
    None when no more can go (the newest message alone is left, or only tool results)."""
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    history = list(messages[head:])
    if len(history) <= 1:
        return None
    kept = history[len(history) // 2 :]
    first_user = next((i for i, message in enumerate(kept) if message["role"] == "user"), None)
    if first_user is not None:
        kept = kept[first_user:]
    while kept and kept[0]["role"] == "tool":
        kept = kept[1:]
    return [*messages[:head], *kept] if kept else None
