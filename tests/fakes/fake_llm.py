"""A small OpenAI-compatible chat endpoint on 127.0.0.1 that can misbehave on cue.

It streams ``POST /v1/chat/completions`` as server-sent events, echoing the last user message
word by word ("You said: ..."), except when that message contains ``[hang]``: then it reads
the request and never answers (as a wedged server does). :meth:`FakeLLM.stop_listening`
closes the port (connections are refused) and :meth:`FakeLLM.start_listening` opens the same
port again. It counts the requests it leaves hanging, so a test can see a client gave up.
Runs in the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

HANG = "[hang]"


class FakeLLM:
    def __init__(self, model: str = "fake-llm") -> None:
        self.model = model
        self.port = 0
        self.open_connections = 0
        self.hanging = 0  # requests being left unanswered now
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start_listening(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """Close the port: new connections are refused (open ones are left as they are)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def aclose(self) -> None:
        await self.stop_listening()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.open_connections += 1
        try:
            while await self._answer(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request on a kept-alive connection; False once the client is gone."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        method, path, _ = request_line.split(" ", 2)
        self.requests += 1
        if method == "GET" and path.endswith("/models"):
            await _send_json(writer, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
            return True
        if method != "POST" or not path.endswith("/chat/completions"):
            await _send_json(writer, {"error": {"message": f"no route {path}"}}, status="404 Not Found")
            return True
        request = json.loads(body)
        said = _last_user_text(request.get("messages") or [])
        if HANG in said:
            self.hanging += 1
            try:
                await reader.read()  # never answer; return once the client closes the connection
            finally:
                self.hanging -= 1
            return False
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for word in f"You said: {said}".split():
            await _send_chunk(writer, self._delta(word + " "))
        await _send_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    def _delta(self, text: str) -> bytes:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content)
    return ""


async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


async def _send_json(writer: asyncio.StreamWriter, body: dict[str, Any], status: str = "200 OK") -> None:
    data = json.dumps(body).encode()
    writer.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n".encode())
    writer.write(data)
    await writer.drain()
