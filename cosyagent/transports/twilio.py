"""`WS /v1/telephony/twilio/media`: a phone call over Twilio's bidirectional Media Streams.

Twilio opens the socket once the call is answered with ``<Connect><Stream>`` TwiML and
speaks JSON text messages: ``connected``, ``start`` (stream and call ids, custom
parameters), ``media`` (the caller's audio, base64 G.711 μ-law at 8 kHz, 20 ms a frame),
``dtmf``, ``mark`` (the echo of one of ours) and ``stop``; we answer with ``media``,
``mark`` and ``clear``.

The session runs with ``audio/pcmu`` in and out, so the caller's bytes go straight into
:meth:`RealtimeSession.append_audio` and the reply leaves as the session's own
``response.output_audio.delta`` events (100 ms of μ-law each, paced to real time plus
``realtime.output_lead_ms``): :class:`MediaStreamSerializer` cuts each delta into 20 ms
``media`` frames followed by one ``mark``. Twilio echoes a mark when the caller has heard
the audio before it, so the marks say how much of the reply was really played.

Barge-in is the sink's :meth:`TwilioPlayback.clear`: a ``clear`` empties Twilio's buffer,
and the assistant item is truncated (``conversation.item.truncate``, as an OpenAI client
does) to the audio up to the last echoed mark: the context keeps what the caller heard,
not what was sent ahead of it. Twilio also echoes the marks a ``clear`` dropped; those
are recognized and not counted as heard.

A key press (``dtmf``) becomes a user message ``[DTMF 5]`` in the conversation: the
model reads it with the caller's next turn; it does not start a reply by itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cosyagent.agent.events import Event
from cosyagent.agent.session import RealtimeSession, SendEvent
from cosyagent.runtime.sessions import SessionRefused
from cosyagent.transports.base import AudioSink, Serializer

logger = logging.getLogger(__name__)

TRANSPORT = "twilio"  # its name in metrics and the session registry
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz: the frame Twilio sends and we send back
DTMF_DIGITS = frozenset("0123456789*#ABCD")
# Every call's session: G.711 μ-law both ways (turn detection stays the server's default).
SESSION: dict[str, Any] = {
    "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}
}
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008

SessionFactory = Callable[[AudioSink, SendEvent], RealtimeSession]


# --- what a message from Twilio becomes ---------------------------------------------------


@dataclass(frozen=True)
class CallStarted:
    stream_sid: str
    call_sid: str
    custom_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallerAudio:
    data: bytes  # μ-law, 8 kHz


@dataclass(frozen=True)
class KeyPressed:
    digit: str


@dataclass(frozen=True)
class MarkPlayed:
    name: str


@dataclass(frozen=True)
class CallStopped:
    pass


@dataclass(frozen=True)
class Ignored:
    """A message with nothing to do: ``reason`` is logged (at INFO when ``malformed``)."""

    reason: str
    malformed: bool = True


TwilioInbound = CallStarted | CallerAudio | KeyPressed | MarkPlayed | CallStopped | Ignored


class MediaStreamSerializer(Serializer[TwilioInbound]):
    """The Media Streams wire format of one call, with what it must remember: the stream id
    every outbound message carries, and the marks sent and heard for the reply playing."""

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self._count = 0
        self._marks: dict[str, tuple[str, float]] = {}  # mark name -> (item id, its audio ms up to the mark)
        self._dropped: set[str] = set()  # marks a clear dropped: Twilio echoes them, unplayed
        self._item: str | None = None  # the assistant item whose audio was sent last
        self._sent_ms = 0.0  # of that item
        self._heard_ms = 0.0  # of that item, up to its latest echoed mark

    def serialize(self, event: Event) -> list[str]:
        kind = event.get("type")
        if kind == "error":
            logger.warning("twilio stream %s: session error: %s", self.stream_sid, event.get("error"))
        if kind != "response.output_audio.delta":
            return []  # a phone has no place for the session's other events
        if self.stream_sid is None:
            return []  # no stream yet: nothing can be addressed to it
        audio = base64.b64decode(event["delta"])
        item_id = str(event["item_id"])
        if item_id != self._item:
            self._item, self._sent_ms, self._heard_ms = item_id, 0.0, 0.0
        messages = [
            self._message("media", media={"payload": base64.b64encode(audio[i : i + FRAME_BYTES]).decode("ascii")})
            for i in range(0, len(audio), FRAME_BYTES)
        ]
        self._sent_ms += len(audio) / 8.0
        self._count += 1
        name = f"{item_id}:{self._count}"
        self._marks[name] = (item_id, self._sent_ms)
        messages.append(self._message("mark", mark={"name": name}))
        return messages

    def deserialize(self, message: str | bytes) -> TwilioInbound:
        try:
            data = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return Ignored("not valid JSON")
        if not isinstance(data, dict):
            return Ignored("not a JSON object")
        kind = data.get("event")
        body = data.get(kind) if isinstance(kind, str) else None
        if kind == "connected":
            return Ignored("connected", malformed=False)
        if kind == "stop":
            return CallStopped()
        if not isinstance(body, dict):
            return Ignored(f"event {kind!r} without its {kind!r} object" if kind else "no event name")
        if kind == "start":
            return self._start(data, body)
        if self.stream_sid is None:
            return Ignored(f"{kind!r} before start")
        if kind == "media":
            return _media(body)
        if kind == "dtmf":
            digit = body.get("digit")
            return KeyPressed(digit) if digit in DTMF_DIGITS else Ignored(f"dtmf digit {digit!r} is not a key")
        if kind == "mark":
            return self._mark(body.get("name"))
        return Ignored(f"unknown event {kind!r}")

    def clear(self) -> tuple[list[str], Event | None]:
        """Barge-in: the message that empties Twilio's buffer, and the client event that
        truncates the assistant item to what the caller heard (None: all of it was heard)."""
        if self.stream_sid is None:
            return [], None
        self._dropped |= set(self._marks)
        self._marks.clear()
        truncate: Event | None = None
        if self._item is not None and self._heard_ms < self._sent_ms:
            truncate = {
                "type": "conversation.item.truncate",
                "item_id": self._item,
                "content_index": 0,
                "audio_end_ms": int(self._heard_ms),
            }
        self._item, self._sent_ms, self._heard_ms = None, 0.0, 0.0
        return [self._message("clear")], truncate

    def _start(self, data: dict[str, Any], body: dict[str, Any]) -> TwilioInbound:
        stream_sid = body.get("streamSid", data.get("streamSid"))
        if not isinstance(stream_sid, str) or not stream_sid:
            return Ignored("start without a streamSid")
        media_format = body.get("mediaFormat")
        if isinstance(media_format, dict) and (
            media_format.get("encoding", "audio/x-mulaw") != "audio/x-mulaw"
            or media_format.get("sampleRate", 8000) != 8000
        ):
            logger.warning("twilio stream %s: media format %s, not μ-law 8 kHz", stream_sid, media_format)
        self.stream_sid = stream_sid
        parameters = body.get("customParameters")
        return CallStarted(stream_sid, str(body.get("callSid", "")), parameters if isinstance(parameters, dict) else {})

    def _mark(self, name: Any) -> TwilioInbound:
        if not isinstance(name, str):
            return Ignored("mark without a name")
        if name in self._dropped:
            self._dropped.discard(name)
            return Ignored(f"mark {name!r} dropped by a clear", malformed=False)
        if name not in self._marks:
            return Ignored(f"mark for an unknown name {name!r}")
        item_id, end_ms = self._marks.pop(name)
        for earlier in [n for n, (item, ms) in self._marks.items() if item == item_id and ms <= end_ms]:
            del self._marks[earlier]  # echoes arrive in order: an earlier one lost is played too
        if item_id == self._item:
            self._heard_ms = max(self._heard_ms, end_ms)
        return MarkPlayed(name)

    def _message(self, kind: str, **fields: Any) -> str:
        return json.dumps({"event": kind, "streamSid": self.stream_sid, **fields}, separators=(",", ":"))


def _media(body: dict[str, Any]) -> TwilioInbound:
    track = body.get("track", "inbound")
    if track != "inbound":
        return Ignored(f"media of the {track!r} track", malformed=False)
    payload = body.get("payload")
    if not isinstance(payload, str):
        return Ignored("media without a payload string")
    try:
        return CallerAudio(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        return Ignored("media payload is not valid base64")


# --- the call ----------------------------------------------------------------------------


class TwilioPlayback(AudioSink):
    """Twilio plays the reply from its own buffer: the sink only has to empty it on a
    barge-in (hold needs nothing: the session stops sending, the buffer runs out)."""

    def __init__(self, on_clear: Callable[[], None]) -> None:
        self._on_clear = on_clear

    def finish(self, response_id: str) -> None:
        pass

    def clear(self) -> None:
        self._on_clear()

    def hold(self) -> None:
        pass

    def resume(self) -> None:
        pass


class TwilioCall:
    """One phone call: the socket's reader and writer tasks around the session."""

    def __init__(self, websocket: WebSocket, make_session: SessionFactory) -> None:
        self._websocket = websocket
        self._serializer = MediaStreamSerializer()
        self._outgoing: asyncio.Queue[str] = asyncio.Queue()
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()  # client events for the session's core
        self.session = make_session(TwilioPlayback(self._clear), self._send)

    async def run(self) -> None:
        """Serve the call until Twilio stops it or the socket goes. Cancel-safe."""
        sid = self.session.core.session_id
        reader = asyncio.create_task(self._read(), name=f"{sid}-twilio-reader")
        writer = asyncio.create_task(self._write(), name=f"{sid}-twilio-writer")
        try:
            await self.session.run(self._inbox.get)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            if self._websocket.client_state == WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError):  # the peer closed at the same moment
                    await self._websocket.close()

    async def _send(self, event: Event) -> None:
        for text in self._serializer.serialize(event):
            self._outgoing.put_nowait(text)

    def _clear(self) -> None:
        messages, truncate = self._serializer.clear()
        for text in messages:
            self._outgoing.put_nowait(text)
        if truncate is not None:
            logger.info(
                "twilio stream %s: reply cleared; item %s truncated to the %d ms heard",
                self._serializer.stream_sid,
                truncate["item_id"],
                truncate["audio_end_ms"],
            )
            self._inbox.put_nowait(json.dumps(truncate))

    async def _write(self) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                await self._websocket.send_text(await self._outgoing.get())
        self._inbox.put_nowait(None)  # the socket is gone: the session ends

    async def _read(self) -> None:
        try:
            while True:
                try:
                    message = await self._websocket.receive()
                except (WebSocketDisconnect, RuntimeError):
                    return
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if not self._handle(self._serializer.deserialize(text if text is not None else message["bytes"])):
                    return
        finally:
            self._inbox.put_nowait(None)  # the session ends with the stream

    def _handle(self, inbound: TwilioInbound) -> bool:
        """Carry out one message; False once the stream has stopped."""
        if isinstance(inbound, CallerAudio):
            self.session.append_audio(inbound.data)
        elif isinstance(inbound, CallStarted):
            logger.info(
                "twilio stream %s started: call %s, session %s",
                inbound.stream_sid,
                inbound.call_sid,
                self.session.core.session_id,
            )
        elif isinstance(inbound, KeyPressed):
            logger.info("twilio stream %s: key %s", self._serializer.stream_sid, inbound.digit)
            self._inbox.put_nowait(json.dumps(dtmf_item(inbound.digit)))
        elif isinstance(inbound, CallStopped):
            logger.info("twilio stream %s stopped", self._serializer.stream_sid)
            return False
        elif isinstance(inbound, Ignored):
            level = logging.INFO if inbound.malformed else logging.DEBUG
            logger.log(level, "twilio stream %s: ignored a message: %s", self._serializer.stream_sid, inbound.reason)
        return True


def dtmf_item(digit: str) -> Event:
    """The user message a key press becomes: ``[DTMF 5]``."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"[DTMF {digit}]"}]},
    }


async def refuse_call(websocket: WebSocket, refusal: SessionRefused) -> None:
    """Accept and close at once with 1013 "try again later", the refusal's code as the reason
    (Twilio ends the stream; the call follows the TwiML after ``<Connect>``)."""
    await websocket.accept()
    await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason=refusal.code)
