"""What every carrier's media stream shares: JSON messages in, a call's codec, reply frames
with marks out, barge-in, keys. Each carrier (Twilio, Telnyx, Exotel, Plivo) is a
:class:`Dialect`: its field names, its ``start`` message and its outbound messages.

The carrier opens the socket and sends ``start`` (stream and call ids, the codec); until then
nothing is admitted. The call's session runs in the carrier's codec when the session has it
(G.711 passes through) and in ``audio/pcm`` otherwise (:mod:`cosyagent.audio.carrier`
transcodes). Reply audio leaves as the session's ``response.output_audio.delta`` events
(100 ms each, paced to real time plus ``realtime.output_lead_ms``), cut into 20 ms frames,
each delta followed by a mark: the carrier echoes a mark when the caller has heard the audio
before it, so the marks say how much of the reply was really played.

Barge-in has two steps, because a carrier's buffer can be emptied but not paused. When speech
starts over the reply (:meth:`MediaStreamSerializer.pause`), the carrier's clear message empties
its buffer at once, so the caller hears the agent stop; the reply's audio is kept. If the speech
is confirmed (:meth:`MediaStreamSerializer.clear`), the assistant item is truncated
(``conversation.item.truncate``, as an OpenAI client does) to the audio up to the last echoed
mark; if it was only a cough (:meth:`MediaStreamSerializer.resume`), the audio from that mark on
is sent again (the caller may hear up to one 100 ms delta twice). Marks a clear dropped and the
carrier echoes anyway are recognized and not counted as heard.

A key press becomes a user message ``[DTMF 5]``: the model reads it with the caller's next
turn. A malformed message is logged with its precise reason and ignored; a stream that cannot
be served (no ``start``, a codec we cannot carry) is closed with the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from cosyagent.agent.events import Event
from cosyagent.audio.carrier import CarrierAudio, CarrierAudioError, CarrierCodec
from cosyagent.transports.base import Serializer

logger = logging.getLogger(__name__)

DTMF_DIGITS = frozenset("0123456789*#ABCD")


# --- what a message from the carrier becomes ------------------------------------------


@dataclass(frozen=True)
class CallStarted:
    stream_id: str
    call_id: str
    audio: CarrierAudio
    custom_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallerAudio:
    data: bytes  # in the session's input format


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


@dataclass(frozen=True)
class Unservable:
    """A stream this server cannot serve: closed with ``reason``."""

    reason: str


CarrierInbound = CallStarted | CallerAudio | KeyPressed | MarkPlayed | CallStopped | Ignored | Unservable


class Dialect(ABC):
    """One carrier's field names. Messages are JSON objects with an ``event`` name; the
    defaults are the Twilio-like shape (``{"event": "dtmf", "dtmf": {"digit": "5"}}``)."""

    name: str  # the transport's name in metrics, logs and the session registry
    stream_key: str  # the stream id's field, in ``start`` or beside it
    stop_event = "stop"
    mark_event = "mark"  # the echo of one of our marks
    quiet_events: frozenset[str] = frozenset({"connected"})  # nothing to do, nothing wrong
    one_frame_per_message = False  # True: each 20 ms frame its own media message

    def start(self, data: dict[str, Any]) -> CallStarted | Ignored | Unservable:
        """The ``start`` message: ids and codec, or why the stream cannot be served."""
        body = data.get("start")
        if not isinstance(body, dict):
            return Ignored("event 'start' without its 'start' object")
        stream_id = body.get(self.stream_key, data.get(self.stream_key))
        if not isinstance(stream_id, str) or not stream_id:
            return Ignored(f"start without a {self.stream_key}")
        return self.started(stream_id, body, data)

    @abstractmethod
    def started(self, stream_id: str, body: dict[str, Any], data: dict[str, Any]) -> CallStarted | Unservable:
        """The call ``start`` describes (``body``: its ``start`` object), or why it cannot be served."""

    @abstractmethod
    def media(self, stream_id: str, audio: CarrierAudio, payload: str) -> dict[str, Any]:
        """The outbound message carrying ``payload`` (base64 audio in ``audio``)."""

    @abstractmethod
    def mark(self, stream_id: str, name: str) -> dict[str, Any]: ...

    @abstractmethod
    def clear(self, stream_id: str) -> dict[str, Any]: ...

    def mark_name(self, data: dict[str, Any]) -> Any:
        body = data.get(self.mark_event)
        return body.get("name") if isinstance(body, dict) else None

    def other(self, kind: str, data: dict[str, Any]) -> Ignored:
        """An event the dialect does not name (e.g. a carrier's own error report)."""
        return Ignored(f"unknown event {kind!r}")


class MediaStreamSerializer(Serializer[CarrierInbound]):
    """One call's stream in a dialect, with what it must remember: the stream id, the codec,
    the marks sent and heard for the reply playing, and reply audio short of a whole frame."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.stream_id: str | None = None
        self.codec: CarrierCodec | None = None
        self._count = 0
        self._marks: dict[str, tuple[str, float]] = {}  # mark name -> (item id, its audio ms up to the mark)
        self._dropped: set[str] = set()  # marks a clear dropped: a carrier may echo them, unplayed
        self._item: str | None = None  # the assistant item whose audio was sent last
        self._sent_ms = 0.0  # of that item
        self._heard_ms = 0.0  # of that item, up to its latest echoed mark
        self._unsent = b""  # reply audio in the carrier's codec, short of a whole frame
        self._played = bytearray()  # the item's whole frames so far, sent or held back by a pause
        self._paused = False  # speech over the reply emptied the carrier's buffer: send nothing

    def serialize(self, event: Event) -> list[str]:
        kind = event.get("type")
        if kind == "error":
            logger.warning("%s stream %s: session error: %s", self.dialect.name, self.stream_id, event.get("error"))
        if self.stream_id is None or self.codec is None:
            return []  # no stream yet: nothing can be addressed to it
        if kind == "response.output_audio.delta":
            item_id = str(event["item_id"])
            if item_id != self._item:
                self._new_item(item_id)
            wire = self.codec.encode(base64.b64decode(event["delta"]))
            return self._send_audio(self.stream_id, self.codec.audio, item_id, wire, last=False)
        if kind == "response.output_audio.done" and self._item is not None and event.get("item_id") == self._item:
            return self._send_audio(self.stream_id, self.codec.audio, self._item, self.codec.finish(), last=True)
        return []  # a phone has no place for the session's other events

    def deserialize(self, message: str | bytes) -> CarrierInbound:
        try:
            data = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return Ignored("not valid JSON")
        if not isinstance(data, dict):
            return Ignored("not a JSON object")
        kind = data.get("event")
        if not isinstance(kind, str):
            return Ignored("no event name")
        if kind in self.dialect.quiet_events:
            return Ignored(kind, malformed=False)
        if kind == self.dialect.stop_event:
            return CallStopped()
        if kind == "start":
            return self._start(data)
        if self.stream_id is None:
            return Ignored(f"{kind!r} before start")
        if kind == "media":
            return self._media(data.get("media"))
        if kind == "dtmf":
            body = data.get("dtmf")
            digit = body.get("digit") if isinstance(body, dict) else None
            return KeyPressed(digit) if digit in DTMF_DIGITS else Ignored(f"dtmf digit {digit!r} is not a key")
        if kind == self.dialect.mark_event:
            return self._mark(self.dialect.mark_name(data))
        return self.dialect.other(kind, data)

    def pause(self) -> list[str]:
        """Speech started over the reply: the message that empties the carrier's buffer now.
        The reply's audio is kept for :meth:`resume`; nothing more is sent until then."""
        if self.stream_id is None or self._paused or self._item is None or self._heard_ms >= self._sent_ms:
            return []  # nothing is playing
        self._paused = True
        self._drop_marks()
        return [self._json(self.dialect.clear(self.stream_id))]

    def resume(self) -> list[str]:
        """The speech was not a barge-in: the reply's audio again, from the last echoed mark."""
        if self.stream_id is None or self.codec is None or not self._paused:
            return []
        self._paused = False
        audio = self.codec.audio
        heard = round(self._heard_ms * audio.bytes_per_ms)
        heard -= heard % audio.frame_bytes()
        unheard = bytes(self._played[heard:])
        del self._played[heard:]
        return self._frames_out(self.stream_id, audio, str(self._item), unheard) if unheard else []

    def clear(self) -> tuple[list[str], Event | None]:
        """Barge-in: the message that empties the carrier's buffer (unless a pause already
        did), and the client event that truncates the assistant item to what the caller heard
        (None: all of it was heard)."""
        if self.stream_id is None:
            return [], None
        messages = [] if self._paused else [self._json(self.dialect.clear(self.stream_id))]
        self._drop_marks()
        truncate: Event | None = None
        if self._item is not None and self._heard_ms < self._sent_ms:
            truncate = {
                "type": "conversation.item.truncate",
                "item_id": self._item,
                "content_index": 0,
                "audio_end_ms": int(self._heard_ms),
            }
        self._new_item(None)
        if self.codec is not None:
            self.codec.finish()  # the cut reply's tail is not played
        return messages, truncate

    def _new_item(self, item_id: str | None) -> None:
        self._item, self._sent_ms, self._heard_ms, self._unsent = item_id, 0.0, 0.0, b""
        self._played.clear()
        self._paused = False

    def _drop_marks(self) -> None:
        self._dropped |= set(self._marks)
        self._marks.clear()

    def _send_audio(self, stream_id: str, audio: CarrierAudio, item_id: str, wire: bytes, last: bool) -> list[str]:
        """Reply audio (in the carrier's codec) as whole frames, then a mark; a partial frame
        waits for the next delta, or is padded with silence at the end of the item's audio.
        While paused, the frames are only kept."""
        frame = audio.frame_bytes()
        buffered = self._unsent + wire
        if last:
            buffered += audio.silence * ((-len(buffered) % frame) // len(audio.silence))
        whole = len(buffered) // frame * frame
        ready, self._unsent = buffered[:whole], buffered[whole:]
        if not ready:
            return []
        if self._paused:
            self._played += ready
            return []
        return self._frames_out(stream_id, audio, item_id, ready)

    def _frames_out(self, stream_id: str, audio: CarrierAudio, item_id: str, ready: bytes) -> list[str]:
        """Whole frames of ``item_id``'s audio as media messages, then a mark at their end."""
        step = audio.frame_bytes() if self.dialect.one_frame_per_message else len(ready)
        messages = [
            self._json(self.dialect.media(stream_id, audio, base64.b64encode(ready[i : i + step]).decode("ascii")))
            for i in range(0, len(ready), step)
        ]
        self._played += ready
        self._sent_ms = len(self._played) / audio.bytes_per_ms
        self._count += 1
        name = f"{item_id}:{self._count}"
        self._marks[name] = (item_id, self._sent_ms)
        messages.append(self._json(self.dialect.mark(stream_id, name)))
        return messages

    def _start(self, data: dict[str, Any]) -> CarrierInbound:
        if self.stream_id is not None:
            return Ignored("a second start on the same stream")
        try:
            started = self.dialect.start(data)
        except CarrierAudioError as exc:
            return Unservable(str(exc))
        if isinstance(started, CallStarted):
            self.stream_id, self.codec = started.stream_id, CarrierCodec(started.audio)
        return started

    def _media(self, body: Any) -> CarrierInbound:
        if self.codec is None:
            return Ignored("'media' before start")
        if not isinstance(body, dict):
            return Ignored("'media' without its 'media' object")
        track = body.get("track", "inbound")
        if track not in ("inbound", "inbound_track"):
            return Ignored(f"media of the {track!r} track", malformed=False)
        payload = body.get("payload")
        if not isinstance(payload, str):
            return Ignored("media without a payload string")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return Ignored("media payload is not valid base64")
        if len(data) % self.codec.audio.sample_bytes:
            return Ignored(f"media payload of {len(data)} bytes is not whole 16-bit samples")
        return CallerAudio(self.codec.decode(data))

    def _mark(self, name: Any) -> CarrierInbound:
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

    @staticmethod
    def _json(message: dict[str, Any]) -> str:
        return json.dumps(message, separators=(",", ":"))


def hertz(value: Any) -> int | None:
    """A sample rate as carriers write it (8000 or "8000"); None when it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def json_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (for optional fields)."""
    return value if isinstance(value, dict) else {}


def session_config(audio: CarrierAudio) -> dict[str, Any]:
    """The session a call runs: the carrier's codec (or audio/pcm) both ways; turn detection
    stays the server's default."""
    fmt = {"type": audio.session_format}
    return {"audio": {"input": {"format": fmt}, "output": {"format": dict(fmt)}}}


def dtmf_item(digit: str) -> Event:
    """The user message a key press becomes: ``[DTMF 5]``."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"[DTMF {digit}]"}]},
    }


def dtmf_event(digit: str) -> Event:
    """OpenAI's SIP-only server event for a key press: sent to sideband clients of any phone call."""
    return {"type": "input_audio_buffer.dtmf_event_received", "event": digit, "received_at": int(time.time())}
