"""What the LLM client leaves out when an endpoint refuses a prompt longer than its context."""

from __future__ import annotations

import httpx
import openai
import pytest

from cosyagent.engines.base import ChatMessage
from cosyagent.engines.context_fit import is_context_overflow, without_older_half


def refusal(message: str, code: str | None = None) -> openai.BadRequestError:
    response = httpx.Response(400, request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
    return openai.BadRequestError(message, response=response, body={"message": message, "code": code})


@pytest.mark.parametrize(
    ("message", "code", "overflow"),
    [
        ("request (12023 tokens) exceeds the available context size (2048 tokens), try increasing it", None, True),
        ("This model's maximum context length is 8192 tokens. However, you requested 9000", None, True),
        ("Input is too long", "context_length_exceeded", True),
        ("'messages' must contain the word 'json'", None, False),
    ],
)
def test_a_context_overflow_is_told_from_other_refusals(message: str, code: str | None, overflow: bool) -> None:
    assert is_context_overflow(refusal(message, code)) is overflow


def said(role: str, text: str) -> ChatMessage:
    return {"role": role, "content": text}


def test_the_older_half_goes_and_the_instructions_stay() -> None:
    messages = [said("system", "Be brief.")] + [said(r, f"{r} {i}") for i in range(4) for r in ("user", "assistant")]
    shorter = without_older_half(messages)
    assert shorter == [said("system", "Be brief."), said("user", "user 2"), said("assistant", "assistant 2")] + [
        said("user", "user 3"),
        said("assistant", "assistant 3"),
    ]
    halvings = 0
    while (next_shorter := without_older_half(shorter)) is not None:
        shorter, halvings = next_shorter, halvings + 1
    assert halvings == 2 and shorter == [said("system", "Be brief."), said("assistant", "assistant 3")]


def test_the_kept_part_starts_at_a_user_message_never_at_an_orphaned_tool_result() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}
    result = {"role": "tool", "tool_call_id": "c1", "content": "18 C"}
    messages = [said("user", "weather?"), call, result, said("assistant", "18 degrees."), said("user", "thanks")]
    assert without_older_half(messages) == [said("user", "thanks")]  # from the newer half's first user message
    tools_only = [said("user", "weather?"), call, result, result]
    assert without_older_half(tools_only) is None  # tool results without their call: no request to send
    assert without_older_half([said("system", "Be brief."), said("user", "hi")]) is None
