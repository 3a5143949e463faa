"""Function calls as the LLM sees them: chat-completions ``tool_calls`` and ``tool`` messages.

Consecutive completed calls become one assistant message with ``tool_calls``, followed at
once by one ``tool`` message per call, whatever the order of the items in the conversation:
chat endpoints refuse a ``tool_calls`` message that is not answered right after it. A call
whose ``function_call_output`` has not arrived (the client never answered, or the user spoke
again first) is answered with :data:`NO_OUTPUT`; once its output arrives, later responses see
that output in its place. An output whose call is gone (deleted, or past the window) is left out.

When the history ends with tool answers, the response being made is the one that answers
from them: a short system message (:data:`ANSWER_FROM_TOOLS`) asks for spoken words. Without
it the embedded Qwen2.5-Coder-0.5B repeated the call as JSON text in 24 of 24 tries (and that
JSON was spoken); with it, it said the result in words in 20 of 20 (README, Function calling).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosyagent.agent.conversation import ConversationItem

NO_OUTPUT = '{"error": "no output has been received for this call"}'
ANSWER_FROM_TOOLS = "Answer the user from the tool results above, in plain spoken words (no JSON)."


def with_tool_messages(items: Sequence[ConversationItem], outputs: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """Chat messages for ``items`` (messages with text, and completed function calls), with the
    ``tool`` answers from ``outputs`` (call_id -> output) placed right after their calls."""
    calls: list[ConversationItem] = []
    for item in items:
        if item.type == "function_call":
            calls.append(item)
            continue
        yield from _calls(calls, outputs)
        calls = []
        yield {"role": item.role, "content": item.llm_view()}
    if calls:
        yield from _calls(calls, outputs)
        yield {"role": "system", "content": ANSWER_FROM_TOOLS}


def _calls(calls: list[ConversationItem], outputs: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    if not calls:
        return
    yield {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ],
    }
    for call in calls:
        yield {"role": "tool", "tool_call_id": call.call_id, "content": outputs.get(call.call_id, NO_OUTPUT)}
