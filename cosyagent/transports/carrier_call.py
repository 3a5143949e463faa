"""One phone call over a carrier's media-stream socket: wait for ``start``, then the socket's
reader and writer tasks around the session (the wire format: :mod:`.media_stream`).

Call control (:mod:`.phone_calls`): a sideband client may follow the call (:meth:`CarrierCall.watch`:
every event the session sends; :meth:`CarrierCall.post`: client events for the session, as
if the caller's own client had sent them; a key press also reaches it as
``input_audio_buffer.dtmf_event_received``, as on a SIP call), and :meth:`CarrierCall.hang_up`
ends the session: the socket is then closed with 1000, which ends the stream (and the call,
where the stream was its last instruction: docs/phone.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cosyagent.agent.events import Event
from cosyagent.agent.session import RealtimeSession, SendEvent
from cosyagent.transports.base import AudioSink
from cosyagent.transports.media_stream import (
    CallerAudio,
    CallStarted,
    CallStopped,
    CarrierInbound,
    Dialect,
    Ignored,
    KeyPressed,
    MediaStreamSerializer,
    Unservable,
    dtmf_event,
    dtmf_item,
)
from cosyagent.transports.phone_calls import FollowedCall, PhonePlayback

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0  # a stream that names no codec by then is closed
MAX_MALFORMED_IN_A_ROW = 50  # one bad frame is logged and skipped; a stream of them is closed
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013

SessionFactory = Callable[[AudioSink, SendEvent], RealtimeSession]


class CarrierCall(FollowedCall):
    """One carrier stream: :meth:`wait_for_start` on the accepted socket, then :meth:`run`
    the session it was admitted with."""

    def __init__(self, websocket: WebSocket, dialect: Dialect) -> None:
        super().__init__(f"{dialect.name} stream")  # named by its call id once it has started
        self._websocket = websocket
        self._name = dialect.name
        self._serializer = MediaStreamSerializer(dialect)
        self._outgoing: asyncio.Queue[str] = asyncio.Queue()
        self._session: RealtimeSession | None = None
        self._malformed = 0  # malformed messages in a row

    @property
    def stream_id(self) -> str | None:
        return self._serializer.stream_id

    async def wait_for_start(self, timeout_s: float | None = None) -> CallStarted | None:
        """The stream's ``start`` (within ``timeout_s``, default :data:`START_TIMEOUT_S`); None
        when the stream ended or was closed first (a stream that cannot be served is closed
        with the reason). Cancel-safe."""
        timeout_s = START_TIMEOUT_S if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await self._receive()
                    if message is None:
                        return None
                    inbound = self._serializer.deserialize(message)
                    if isinstance(inbound, CallStarted):
                        self._followers.label = f"{self._name} call {inbound.call_id or inbound.stream_id}"
                        return inbound
                    if isinstance(inbound, Unservable):
                        await self.close(CLOSE_UNSUPPORTED_DATA, inbound.reason)
                        return None
                    if isinstance(inbound, CallStopped):
                        await self.close(1000, "stopped before start")
                        return None
                    self._log_ignored(inbound if isinstance(inbound, Ignored) else Ignored("before start"))
                    if (too_many := self._too_many_malformed(inbound)) is not None:
                        await self.close(CLOSE_POLICY_VIOLATION, too_many)
                        return None
        except TimeoutError:
            await self.close(CLOSE_POLICY_VIOLATION, f"no start message within {timeout_s:g} s")
            return None

    async def run(self, make_session: SessionFactory) -> None:
        """Serve the call until the carrier stops it or the socket goes. Cancel-safe."""
        playback = PhonePlayback(hold=self._pause, resume=self._resume, clear=self._clear)
        session = self._session = make_session(playback, self._send)
        sid = session.core.session_id
        reader = asyncio.create_task(self._read(session), name=f"{sid}-{self._name}-reader")
        writer = asyncio.create_task(self._write(), name=f"{sid}-{self._name}-writer")
        try:
            await session.run(self._inbox.get)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            self._followers.end()
            await self.close(1000, "")

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (once) with ``code`` and ``reason`` (cut to what a close frame holds)."""
        if reason:
            logger.warning("%s stream %s closed: %s", self._name, self.stream_id, reason)
        if self._websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the peer closed at the same moment
                await self._websocket.close(code=code, reason=reason.encode()[:123].decode("utf-8", "ignore"))

    async def _receive(self) -> str | bytes | None:
        try:
            message = await self._websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return str(text) if text is not None else bytes(message.get("bytes") or b"")

    async def _send(self, event: Event) -> None:
        self._followers.publish(event)
        self._put(self._serializer.serialize(event))

    def _pause(self) -> None:
        self._put(self._serializer.pause())

    def _resume(self) -> None:
        self._put(self._serializer.resume())

    def _put(self, messages: list[str]) -> None:
        for text in messages:
            self._outgoing.put_nowait(text)

    def _clear(self) -> None:
        messages, truncate = self._serializer.clear()
        self._put(messages)
        if truncate is not None:
            logger.info(
                "%s stream %s: reply cleared; item %s truncated to the %d ms heard",
                self._name,
                self.stream_id,
                truncate["item_id"],
                truncate["audio_end_ms"],
            )
            self._inbox.put_nowait(json.dumps(truncate))

    async def _write(self) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                await self._websocket.send_text(await self._outgoing.get())
        self._inbox.put_nowait(None)  # the socket is gone: the session ends

    async def _read(self, session: RealtimeSession) -> None:
        try:
            while (message := await self._receive()) is not None:
                inbound = self._serializer.deserialize(message)
                if not self._handle(session, inbound):
                    return
                if (too_many := self._too_many_malformed(inbound)) is not None:
                    await self.close(CLOSE_POLICY_VIOLATION, too_many)
                    return
        finally:
            self._inbox.put_nowait(None)  # the session ends with the stream

    def _handle(self, session: RealtimeSession, inbound: CarrierInbound) -> bool:
        """Carry out one message; False once the stream has stopped."""
        if isinstance(inbound, CallerAudio):
            session.append_audio(inbound.data)
        elif isinstance(inbound, KeyPressed):
            logger.info("%s stream %s: key %s", self._name, self.stream_id, inbound.digit)
            self._inbox.put_nowait(json.dumps(dtmf_item(inbound.digit)))
            self._followers.publish(dtmf_event(inbound.digit))  # for sideband clients, as on a SIP call
        elif isinstance(inbound, CallStopped):
            logger.info("%s stream %s stopped", self._name, self.stream_id)
            return False
        elif isinstance(inbound, Ignored):
            self._log_ignored(inbound)
        return True

    def _too_many_malformed(self, inbound: CarrierInbound) -> str | None:
        """Why to close the stream: :data:`MAX_MALFORMED_IN_A_ROW` malformed messages in a row."""
        if not (isinstance(inbound, Ignored) and inbound.malformed):
            self._malformed = 0
            return None
        self._malformed += 1
        if self._malformed < MAX_MALFORMED_IN_A_ROW:
            return None
        return f"{self._malformed} malformed messages in a row, the last: {inbound.reason}"

    def _log_ignored(self, inbound: Ignored) -> None:
        level = logging.INFO if inbound.malformed else logging.DEBUG
        logger.log(level, "%s stream %s: ignored a message: %s", self._name, self.stream_id, inbound.reason)
