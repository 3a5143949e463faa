"""`WS /v1/telephony/plivo/media`: a phone call over Plivo's bidirectional audio streams.

The answer XML (``POST /v1/telephony/plivo/answer``) asks for ``<Stream bidirectional="true"
keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">``. Plivo then sends ``start``
(``start.streamId``, ``start.callId``, ``start.mediaFormat``: ``encoding``, ``sampleRate``),
``media`` (``media.payload``, base64, ``media.track`` inbound), ``dtmf`` (``dtmf.digit``),
``playedStream`` (a checkpoint of ours was played: ``name`` at the top level) and
``clearedAudio``; it sends no ``stop``, the socket closes. We send ``playAudio``
(``media.contentType``, ``media.sampleRate``, ``media.payload``), ``checkpoint`` and
``clearAudio``, each with the ``streamId``. Plivo echoes only checkpoints that played.

Codecs: ``audio/x-mulaw`` at 8 kHz (passed through) and ``audio/x-l16`` at 8/16 kHz
(16-bit little-endian PCM, resampled to the session's ``audio/pcm``).
"""

from __future__ import annotations

from typing import Any

from cosyagent.audio.carrier import CarrierAudio
from cosyagent.transports.media_stream import CallStarted, Dialect, Unservable, hertz

TRANSPORT = "plivo"
CONTENT_TYPES = {"audio/x-mulaw": "pcmu", "audio/x-l16": "l16-le"}


class PlivoDialect(Dialect):
    name = TRANSPORT
    stream_key = "streamId"
    mark_event = "playedStream"
    quiet_events = frozenset({"connected", "clearedAudio"})

    def started(self, stream_id: str, body: dict[str, Any], data: dict[str, Any]) -> CallStarted | Unservable:
        media_format = body.get("mediaFormat", {})
        if not isinstance(media_format, dict):
            return Unservable("mediaFormat is not an object")
        encoding, rate = media_format.get("encoding", "audio/x-mulaw"), hertz(media_format.get("sampleRate", 8000))
        if encoding not in CONTENT_TYPES:
            return Unservable(f"encoding {encoding!r} is not supported (only audio/x-mulaw, audio/x-l16)")
        if rate not in (8000, 16000):
            return Unservable(f"sampleRate {media_format.get('sampleRate')!r} is not supported (only 8000, 16000)")
        headers = data.get("extra_headers")
        custom = {"extra_headers": headers} if isinstance(headers, str) else {}
        audio = CarrierAudio(CONTENT_TYPES[encoding], rate)  # type: ignore[arg-type]
        return CallStarted(stream_id, str(body.get("callId", "")), audio, custom)

    def media(self, stream_id: str, audio: CarrierAudio, payload: str) -> dict[str, Any]:
        content_type = "audio/x-mulaw" if audio.encoding == "pcmu" else "audio/x-l16"
        media = {"contentType": content_type, "sampleRate": audio.rate, "payload": payload}
        return {"event": "playAudio", "streamId": stream_id, "media": media}

    def mark(self, stream_id: str, name: str) -> dict[str, Any]:
        return {"event": "checkpoint", "streamId": stream_id, "name": name}

    def clear(self, stream_id: str) -> dict[str, Any]:
        return {"event": "clearAudio", "streamId": stream_id}

    def mark_name(self, data: dict[str, Any]) -> Any:
        return data.get("name")
