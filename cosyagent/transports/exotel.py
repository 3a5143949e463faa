"""`WS /v1/telephony/exotel/media`: a phone call over Exotel's Voicebot applet (AgentStream,
bidirectional).

Exotel sends ``connected``, ``start`` (``stream_sid`` beside and inside it, ``call_sid``,
``account_sid``, ``from``, ``to``, ``custom_parameters`` and ``media_format``: ``encoding``
``audio/x-raw``, ``sample_rate`` "8000" (or "16000"/"24000" with ``?sample-rate=`` on the
applet's URL), ``bit_rate`` "16"), then ``media`` (base64 raw 16-bit little-endian PCM, about
100 ms a message; or μ-law at 8 kHz, ``audio/x-mulaw``, for a stream started with that
``contentType``), ``dtmf``, ``mark`` and ``stop``. We send ``media`` (whole 20 ms frames:
multiples of 320 bytes at 8 kHz), ``mark`` and ``clear``, each with the ``stream_sid``.
The session runs in ``audio/pcm``; the audio is resampled between its 24 kHz and the call's rate.
"""

from __future__ import annotations

from typing import Any

from cosyagent.audio.carrier import CarrierAudio
from cosyagent.transports.media_stream import CallStarted, Dialect, Unservable, hertz, json_object

TRANSPORT = "exotel"


class ExotelDialect(Dialect):
    name = TRANSPORT
    stream_key = "stream_sid"

    def started(self, stream_id: str, body: dict[str, Any], data: dict[str, Any]) -> CallStarted | Unservable:
        media_format = body.get("media_format", {})
        if not isinstance(media_format, dict):
            return Unservable("media_format is not an object")
        encoding = media_format.get("encoding", "audio/x-raw")
        rate = hertz(media_format.get("sample_rate", "8000"))
        if rate is None:
            return Unservable(f"sample_rate {media_format.get('sample_rate')!r} is not a number of Hz")
        if encoding == "audio/x-mulaw":  # a stream started with contentType audio/x-mulaw;rate=8000
            audio = CarrierAudio("pcmu", rate)
        elif encoding == "audio/x-raw" and str(media_format.get("bit_rate", "16")) == "16":
            audio = CarrierAudio("l16-le", rate)
        else:
            return Unservable(f"media format {media_format} is neither 16-bit audio/x-raw nor audio/x-mulaw")
        custom = json_object(body.get("custom_parameters"))
        return CallStarted(stream_id, str(body.get("call_sid", "")), audio, custom)

    def media(self, stream_id: str, audio: CarrierAudio, payload: str) -> dict[str, Any]:
        return {"event": "media", "stream_sid": stream_id, "media": {"payload": payload}}

    def mark(self, stream_id: str, name: str) -> dict[str, Any]:
        return {"event": "mark", "stream_sid": stream_id, "mark": {"name": name}}

    def clear(self, stream_id: str) -> dict[str, Any]:
        return {"event": "clear", "stream_sid": stream_id}
