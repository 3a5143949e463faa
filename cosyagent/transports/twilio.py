"""`WS /v1/telephony/twilio/media`: a phone call over Twilio's bidirectional Media Streams.

Twilio opens the socket once the call is answered with ``<Connect><Stream>`` TwiML and
speaks JSON text messages: ``connected``, ``start`` (``streamSid``, ``callSid``,
``customParameters``, ``mediaFormat``), ``media`` (the caller's audio, base64 G.711 μ-law at
8 kHz, 20 ms a frame), ``dtmf``, ``mark`` (the echo of one of ours) and ``stop``; we answer
with ``media`` (one 20 ms frame each), ``mark`` and ``clear``, every one carrying the
``streamSid``. Twilio echoes the marks a ``clear`` dropped. The shared stream logic (marks,
barge-in, keys): :mod:`cosyagent.transports.media_stream`.
"""

from __future__ import annotations

import logging
from typing import Any

from cosyagent.audio.carrier import CarrierAudio
from cosyagent.transports.media_stream import CallStarted, Dialect, Unservable, json_object

logger = logging.getLogger(__name__)

TRANSPORT = "twilio"  # its name in metrics and the session registry
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz: the frame Twilio sends and we send back
MULAW_8K = CarrierAudio("pcmu", 8000)


class TwilioDialect(Dialect):
    name = TRANSPORT
    stream_key = "streamSid"
    one_frame_per_message = True

    def started(self, stream_id: str, body: dict[str, Any], data: dict[str, Any]) -> CallStarted | Unservable:
        media_format = body.get("mediaFormat")
        if isinstance(media_format, dict) and (
            media_format.get("encoding", "audio/x-mulaw") != "audio/x-mulaw"
            or media_format.get("sampleRate", 8000) != 8000
        ):
            return Unservable(f"media format {media_format} is not audio/x-mulaw at 8000 Hz")
        custom = json_object(body.get("customParameters"))
        return CallStarted(stream_id, str(body.get("callSid", "")), MULAW_8K, custom)

    def media(self, stream_id: str, audio: CarrierAudio, payload: str) -> dict[str, Any]:
        return {"event": "media", "streamSid": stream_id, "media": {"payload": payload}}

    def mark(self, stream_id: str, name: str) -> dict[str, Any]:
        return {"event": "mark", "streamSid": stream_id, "mark": {"name": name}}

    def clear(self, stream_id: str) -> dict[str, Any]:
        return {"event": "clear", "streamSid": stream_id}
