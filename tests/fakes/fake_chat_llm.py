"""fake_chat_llm: a scripted OpenAI-compatible chat completions endpoint, for deterministic tests
of what the agent does with tool calls (several in one reply, a cut-off call, a call never answered).

It serves ``POST /v1/chat/completions`` with ``stream: true`` over a real socket, streaming each
scripted reply in the chat completions chunk format exactly as OpenAI does: a first chunk with
the role, text as ``delta.content`` pieces, each tool call as ``delta.tool_calls`` pieces (the
first with ``index``, ``id``, ``type`` and ``function.name``, the rest ``function.arguments``
only), a last chunk with ``finish_reason`` (``tool_calls`` or ``stop``), then ``data: [DONE]``.
A request's ``max_tokens`` counts each word as a token: text longer than that is cut there and
ends with ``length``, as the model's own cap does. Every request body is recorded, so a test can
check what the LLM was shown.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "fake-chat-llm"


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str  # sent in pieces of ``piece_chars``
    call_id: str = ""


@dataclass(frozen=True)
class Reply:
    """One scripted reply: text (sent word by word), then tool calls."""

    text: str = ""
    calls: tuple[Call, ...] = ()
    piece_chars: int = 4
    delay_s: float = 0.0  # between chunks: a slow model, to cut a reply off mid-call


@dataclass
class FakeChatLLM:
    replies: list[Reply] = field(default_factory=list)  # taken in order, one per request
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # when each request came (time.monotonic)
    disconnected: int = 0  # streams the client closed before the end

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests"}]})

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.arrived.append(time.monotonic())
        if not body.get("stream") or not self.replies:
            return JSONResponse({"error": {"message": "the script has no reply for this request"}}, status_code=400)
        stream = self._stream(self.replies.pop(0), body.get("max_tokens"))
        return StreamingResponse(stream, media_type="text/event-stream")

    async def _stream(self, reply: Reply, max_tokens: int | None) -> AsyncIterator[bytes]:
        completion_id, created = f"chatcmpl-{len(self.requests)}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            return f"data: {json.dumps(body)}\n\n".encode()

        words = reply.text.split(" ") if reply.text else []
        capped = max_tokens is not None and len(words) > max_tokens
        calls = () if capped else reply.calls  # the cap comes before any call
        finish = "length" if capped else "tool_calls" if calls else "stop"
        try:
            yield chunk({"role": "assistant", "content": "" if reply.text else None})
            for index, word in enumerate(words[:max_tokens]):
                await asyncio.sleep(reply.delay_s)
                yield chunk({"content": word if index == 0 else " " + word})
            for index, call in enumerate(calls):
                await asyncio.sleep(reply.delay_s)
                head = {"index": index, "id": call.call_id or f"call_fake_{index}", "type": "function"}
                yield chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
                for start in range(0, len(call.arguments), reply.piece_chars):
                    await asyncio.sleep(reply.delay_s)
                    piece = call.arguments[start : start + reply.piece_chars]
                    yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            yield chunk({}, finish)
            yield b"data: [DONE]\n\n"
        except asyncio.CancelledError:
            self.disconnected += 1
            raise
