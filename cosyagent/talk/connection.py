"""The Realtime connection as a talk client uses it: events stamped on arrival, a paced microphone."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import logging
import math
import os
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

from openai import AsyncOpenAI, OpenAIError
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeErrorEvent, RealtimeServerEvent
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from cosyagent.talk.clip import CHUNK_S, CHUNK_SAMPLES, RATE, TalkError

logger = logging.getLogger(__name__)

MODEL = "cosyagent-realtime"  # the server accepts any model name
EXAMPLE_URL = "http://127.0.0.1:8188/v1"


def checked_base_url(url: str) -> tuple[str, str | None]:
    """``url`` as the SDK's base URL, and a note when it was fixed up. A bare server address
    (``http://host:port``) or the realtime endpoint itself (``.../v1/realtime``) become
    ``.../v1``; anything else that does not end in ``/v1`` raises :class:`TalkError`."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TalkError(f"the URL must start with http:// or https://, e.g. {EXAMPLE_URL} (got {url})", exit_code=2)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        return urllib.parse.urlunsplit(parts._replace(path=path)), None
    if path in ("", "/v1/realtime"):
        fixed = urllib.parse.urlunsplit(parts._replace(path="/v1", query="", fragment=""))
        return fixed, f"using {fixed} (the URL must end in /v1)"
    raise TalkError(f"the URL must end in /v1, e.g. {EXAMPLE_URL} (got {url})", exit_code=2)


def _refused(exc: OSError) -> bool:
    """Nothing listens there. With several addresses (localhost: ::1 and 127.0.0.1) asyncio
    raises a plain OSError listing each address's error."""
    return exc.errno == errno.ECONNREFUSED or f"[Errno {errno.ECONNREFUSED}]" in str(exc)


@contextlib.asynccontextmanager
async def connect(url: str, api_key: str | None, timeout_s: float = 10.0) -> AsyncIterator[AsyncRealtimeConnection]:
    """Open a Realtime connection to ``url`` (the server's base URL, e.g. ``http://host:8188/v1``)."""
    client = AsyncOpenAI(base_url=url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unused")
    try:
        try:
            async with asyncio.timeout(timeout_s):
                conn = await client.realtime.connect(model=MODEL).enter()
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = "; check the API key (--api-key)" if status == 401 else "; is it a cosyagent server?"
            raise TalkError(
                f"the server at {url} refused the realtime connection (HTTP {status}){hint}", exit_code=2
            ) from exc
        except TimeoutError as exc:
            raise TalkError(
                f"cannot reach a realtime server at {url}: no answer within {timeout_s:g} s", exit_code=2
            ) from exc
        except OSError as exc:  # after TimeoutError, which is one
            if _refused(exc):
                raise TalkError(
                    f"cannot reach a server at {url}: nothing is listening there. "
                    "Start one with `cosyagent serve` in another terminal (or pass its --url)",
                    exit_code=2,
                ) from exc
            raise TalkError(f"cannot reach a realtime server at {url}: {exc}", exit_code=2) from exc
        except (InvalidHandshake, InvalidURI, OpenAIError) as exc:
            raise TalkError(
                f"cannot reach a realtime server at {url}: {exc or type(exc).__name__}", exit_code=2
            ) from exc
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await client.close()


@dataclass(frozen=True)
class Stamped:
    """A server event and its arrival time (``time.monotonic()``)."""

    at: float
    event: RealtimeServerEvent

    @property
    def type(self) -> str:
        return str(getattr(self.event, "type", ""))


class EventStream:
    """Reads server events in a task, stamping each on arrival, so that a slow consumer
    doesn't skew the times. ``next`` is cancel-safe: an event is never lost by a timeout."""

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[Stamped | TalkError] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name="realtime-events")

    async def _read(self) -> None:
        try:
            async for event in self._conn:
                self._queue.put_nowait(Stamped(time.monotonic(), event))
            self._queue.put_nowait(TalkError("the server closed the connection"))
        except (ConnectionClosed, OpenAIError, OSError) as exc:
            self._queue.put_nowait(TalkError(f"the connection to the server was lost: {exc}"))

    async def next(self, deadline: float) -> Stamped:
        """The next event; :class:`TalkError` when the connection ends, ``TimeoutError`` at ``deadline``."""
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            item = await self._queue.get()
        if isinstance(item, TalkError):
            self._queue.put_nowait(item)  # every later call fails the same way
            raise item
        return item

    async def expect(self, event_type: str, deadline: float) -> Stamped:
        """Skip events until one of ``event_type``; an ``error`` event raises :class:`TalkError`."""
        while True:
            item = await self.next(deadline)
            if isinstance(item.event, RealtimeErrorEvent):
                raise TalkError(f"server error: {item.event.error.message}")
            if item.type == event_type:
                return item

    async def aclose(self) -> None:
        await _cancel(self._task)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves: never swallow that


class Microphone:
    """Streams audio as a live microphone would: chunk ``i`` (100 ms) is sent at
    ``start + (i + 1) * 0.1`` s, when its last sample has been spoken. With ``keep_alive``
    it sends silence while nothing is queued; otherwise it sends nothing then."""

    def __init__(self, conn: AsyncRealtimeConnection, *, keep_alive: bool) -> None:
        self._conn = conn
        self._keep_alive = keep_alive
        self._t0 = 0.0
        self._next_chunk = 0  # the chunk to send next; the queue starts at its first sample
        self._queue = bytearray()
        self._task: asyncio.Task[None] | None = None
        self.max_send_lag_s = 0.0  # the latest a chunk went out after its due time

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="microphone")

    def play(self, pcm16: bytes) -> float:
        """Queue 24 kHz pcm16 to be spoken from now on (after anything still queued); returns
        the wall-clock time (``time.monotonic()``) of its first sample in the stream."""
        if self._task is None:
            raise RuntimeError("start() the microphone first")
        queued_end = self._next_chunk * CHUNK_SAMPLES + len(self._queue) // 2
        start = max(math.ceil((time.monotonic() - self._t0) * RATE), queued_end)
        self._queue.extend(bytes(2 * (start - queued_end)))
        self._queue.extend(pcm16)
        return self._t0 + start / RATE

    @property
    def started_at(self) -> float:
        """The wall-clock time of the stream's sample 0 (the server's ``audio_*_ms`` origin)."""
        return self._t0

    async def _run(self) -> None:
        chunk_bytes = 2 * CHUNK_SAMPLES
        while True:
            due = self._t0 + (self._next_chunk + 1) * CHUNK_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            chunk = bytes(self._queue[:chunk_bytes])
            del self._queue[:chunk_bytes]
            self._next_chunk += 1
            if not chunk and not self._keep_alive:
                continue
            payload = base64.b64encode(chunk.ljust(chunk_bytes, b"\0")).decode()
            try:
                await self._conn.input_audio_buffer.append(audio=payload)
            except (ConnectionClosed, OpenAIError, OSError) as exc:
                logger.debug("microphone stopped: %s", exc)  # the event reader reports the closure
                return
            self.max_send_lag_s = max(self.max_send_lag_s, time.monotonic() - due)

    async def aclose(self) -> None:
        await _cancel(self._task)
