"""`WS /v1/telephony/telnyx/media`: a phone call over Telnyx Media Streaming (bidirectional,
``stream_bidirectional_mode: rtp``).

Telnyx sends ``connected``, then ``start`` with the ``stream_id`` beside it and, inside,
``call_control_id``, ``from``, ``to``, ``custom_parameters`` and ``media_format``
(``encoding``, ``sample_rate``, ``channels``); then ``media`` (base64 RTP payloads without
headers, ``media.track`` inbound), ``dtmf`` (``dtmf.digit``), ``mark`` (the echo of one of
ours, also for marks a ``clear`` dropped), ``error`` and ``stop``. We send ``media``
(``media.payload``), ``mark`` (``mark.name``) and ``clear``.

Codecs: PCMU and PCMA at 8 kHz (passed through to the session), L16 at 8/16/24 kHz (RTP's
network byte order, big-endian) and G.722 (16 kHz audio; FFmpeg's LGPL codec through PyAV).
The reply goes back in the codec ``start`` names, so ``stream_bidirectional_codec`` (and
``stream_bidirectional_sampling_rate`` for L16) must match ``stream_codec``. OPUS and AMR-WB
are refused with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from cosyagent.audio.carrier import CarrierAudio
from cosyagent.transports.media_stream import CallStarted, Dialect, Ignored, Unservable, hertz, json_object

logger = logging.getLogger(__name__)

TRANSPORT = "telnyx"
ENCODINGS = {"PCMU": "pcmu", "PCMA": "pcma", "L16": "l16-be", "G722": "g722"}


class TelnyxDialect(Dialect):
    name = TRANSPORT
    stream_key = "stream_id"

    def started(self, stream_id: str, body: dict[str, Any], data: dict[str, Any]) -> CallStarted | Unservable:
        media_format = body.get("media_format")
        if not isinstance(media_format, dict):
            return Unservable("start without a media_format object")
        encoding, rate = media_format.get("encoding"), hertz(media_format.get("sample_rate", 8000))
        if encoding not in ENCODINGS:
            return Unservable(f"encoding {encoding!r} is not supported (only PCMU, PCMA, L16, G722)")
        if media_format.get("channels", 1) != 1:
            return Unservable(f"{media_format.get('channels')!r} channels: only mono is supported")
        if rate is None:
            return Unservable(f"sample_rate {media_format.get('sample_rate')!r} is not a number of Hz")
        if encoding == "G722" and rate == 8000:
            rate = 16000  # G.722's RTP clock is 8000; its audio is 16 kHz
        custom = json_object(body.get("custom_parameters"))
        audio = CarrierAudio(ENCODINGS[encoding], rate)  # type: ignore[arg-type]
        return CallStarted(stream_id, str(body.get("call_control_id", "")), audio, custom)

    def media(self, stream_id: str, audio: CarrierAudio, payload: str) -> dict[str, Any]:
        return {"event": "media", "media": {"payload": payload}}

    def mark(self, stream_id: str, name: str) -> dict[str, Any]:
        return {"event": "mark", "mark": {"name": name}}

    def clear(self, stream_id: str) -> dict[str, Any]:
        return {"event": "clear"}

    def other(self, kind: str, data: dict[str, Any]) -> Ignored:
        if kind == "error":  # Telnyx reports a fault of the stream (e.g. a media frame it refused)
            logger.warning("telnyx stream: Telnyx reported an error: %s", data.get("payload", data))
            return Ignored("Telnyx reported an error", malformed=False)
        return super().other(kind, data)
