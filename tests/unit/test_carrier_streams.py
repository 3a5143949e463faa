"""The Telnyx, Exotel and Plivo media-stream wire formats (sans-I/O), the carrier codecs, and
the routes' refusals of streams they cannot serve, on the real app without loading models.
The calls themselves: tests/e2e/test_carrier_calls.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cosyagent.audio.carrier import CarrierAudio, CarrierAudioError, CarrierCodec
from cosyagent.audio.pcm import float_to_pcm16, pcm16_to_float
from cosyagent.config import load_config
from cosyagent.runtime import Runtime
from cosyagent.transports import carrier_call
from cosyagent.transports.exotel import ExotelDialect
from cosyagent.transports.media_stream import (
    CallerAudio,
    CallStarted,
    CallStopped,
    Ignored,
    KeyPressed,
    MarkPlayed,
    MediaStreamSerializer,
    Unservable,
    session_config,
)
from cosyagent.transports.plivo import PlivoDialect
from cosyagent.transports.telnyx import TelnyxDialect
from cosyagent.web.app import create_app

# Telnyx's documented start frame (Media Streaming WebSocket, AsyncAPI example).
TELNYX_START: dict[str, Any] = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
    "start": {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094",
        "to": "+13122123456",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}
# Exotel's documented start (AgentStream WebSocket protocol).
EXOTEL_START: dict[str, Any] = {
    "event": "start",
    "sequence_number": "1",
    "stream_sid": "MZ1",
    "start": {
        "stream_sid": "MZ1",
        "call_sid": "CA1",
        "account_sid": "AC1",
        "from": "+919876543210",
        "to": "+918047491899",
        "custom_parameters": {"key1": "value1"},
        "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
    },
}
# Plivo's documented start (Stream Event Protocol).
PLIVO_START: dict[str, Any] = {
    "event": "start",
    "sequenceNumber": 1,
    "start": {
        "callId": "12345678-1234-1234-1234-123456789abc",
        "streamId": "87654321-4321-4321-4321-cba987654321",
        "accountId": "MAXXXXXXXXXXXXXXXXXX",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    },
    "extra_headers": "userId=12345;sessionId=abc-xyz",
}


def with_format(start: dict[str, Any], key: str, media_format: dict[str, Any]) -> str:
    return json.dumps({**start, "start": {**start["start"], key: media_format}})


def delta(item_id: str, audio: bytes) -> dict[str, Any]:
    return {"type": "response.output_audio.delta", "item_id": item_id, "delta": base64.b64encode(audio).decode()}


def tone(rate: int, seconds: float) -> np.ndarray[Any, np.dtype[np.float32]]:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_carrier_audio_refuses_what_it_cannot_carry() -> None:
    for encoding, rate in (("pcmu", 16000), ("g722", 8000), ("l16-le", 44100)):
        with pytest.raises(CarrierAudioError, match=f"{rate} Hz is not supported"):
            CarrierAudio(encoding, rate)  # type: ignore[arg-type]


def test_g711_passes_through_and_l16_g722_are_transcoded_to_the_session_pcm() -> None:
    assert CarrierCodec(CarrierAudio("pcmu", 8000)).decode(b"\x01\x02") == b"\x01\x02"
    assert session_config(CarrierAudio("pcma", 8000))["audio"]["input"]["format"] == {"type": "audio/pcma"}
    for audio in (CarrierAudio("l16-be", 16000), CarrierAudio("l16-le", 8000), CarrierAudio("g722", 16000)):
        codec = CarrierCodec(audio)
        session_rate_pcm = float_to_pcm16(tone(24000, 1.0))
        wire = codec.encode(session_rate_pcm)
        assert abs(len(wire) / audio.bytes_per_ms - 1000) <= 40, (audio, len(wire))  # the resampler's lag
        back = pcm16_to_float(codec.decode(wire))
        assert abs(back.size / 24 - 1000) <= 120, (audio, back.size)  # two resamplers' lag
        # The tone survives the round trip (lag-tolerant: compare energy, not samples).
        assert 0.15 < float(np.sqrt(np.mean(back[4800:-4800] ** 2))) < 0.3, audio
    big_endian = CarrierCodec(CarrierAudio("l16-be", 24000)).encode(np.array([1, -2], dtype="<i2").tobytes())
    assert big_endian == b"\x00\x01\xff\xfe"


def test_telnyx_start_media_marks_and_clear() -> None:
    serializer = MediaStreamSerializer(TelnyxDialect())
    started = serializer.deserialize(json.dumps(TELNYX_START))
    assert isinstance(started, CallStarted)
    assert started.call_id.startswith("v2:") and started.audio == CarrierAudio("pcmu", 8000)
    assert started.custom_parameters == {"customer_id": "customer_123"}
    frame = base64.b64encode(b"\xff" * 160).decode()
    media = {"event": "media", "stream_id": "x", "media": {"track": "inbound", "chunk": "2", "payload": frame}}
    assert serializer.deserialize(json.dumps(media)) == CallerAudio(b"\xff" * 160)
    outbound = {**media, "media": {**media["media"], "track": "outbound"}}
    assert not serializer.deserialize(json.dumps(outbound)).malformed  # type: ignore[union-attr]
    dtmf = {"event": "dtmf", "stream_id": "x", "dtmf": {"digit": "7"}}
    assert serializer.deserialize(json.dumps(dtmf)) == KeyPressed("7")
    messages = [json.loads(m) for m in serializer.serialize(delta("item_a", b"\x00" * 800))]
    assert [m["event"] for m in messages] == ["media", "mark"]  # whole frames in one media message
    assert len(base64.b64decode(messages[0]["media"]["payload"])) == 800
    name = messages[1]["mark"]["name"]
    serializer.serialize(delta("item_a", b"\x00" * 800))
    assert serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": name}})) == MarkPlayed(name)
    clear, truncate = serializer.clear()
    assert [json.loads(m) for m in clear] == [{"event": "clear"}]
    assert truncate is not None and truncate["audio_end_ms"] == 100
    error = serializer.deserialize(json.dumps({"event": "error", "payload": {"code": 100002, "title": "x"}}))
    assert isinstance(error, Ignored) and not error.malformed
    assert isinstance(serializer.deserialize(json.dumps({"event": "stop", "stop": {}})), CallStopped)


def test_telnyx_codecs_and_refusals() -> None:
    cases = {
        "PCMA": CarrierAudio("pcma", 8000),
        "L16": CarrierAudio("l16-be", 16000),
        "G722": CarrierAudio("g722", 16000),
    }
    for encoding, audio in cases.items():
        rate = 16000 if encoding == "L16" else 8000
        message = with_format(TELNYX_START, "media_format", {"encoding": encoding, "sample_rate": rate, "channels": 1})
        started = MediaStreamSerializer(TelnyxDialect()).deserialize(message)
        assert isinstance(started, CallStarted) and started.audio == audio, encoding
    refusals = {
        "'OPUS' is not supported": {"encoding": "OPUS", "sample_rate": 16000, "channels": 1},
        "2 channels": {"encoding": "PCMU", "sample_rate": 8000, "channels": 2},
        "pcmu at 16000 Hz is not supported": {"encoding": "PCMU", "sample_rate": 16000, "channels": 1},
    }
    for reason, media_format in refusals.items():
        message = with_format(TELNYX_START, "media_format", media_format)
        refused = MediaStreamSerializer(TelnyxDialect()).deserialize(message)
        assert isinstance(refused, Unservable) and reason in refused.reason, (reason, refused)


def test_exotel_pcm_in_whole_320_byte_frames_and_padded_at_the_end() -> None:
    serializer = MediaStreamSerializer(ExotelDialect())
    started = serializer.deserialize(json.dumps(EXOTEL_START))
    assert isinstance(started, CallStarted) and started.audio == CarrierAudio("l16-le", 8000)
    assert started.call_id == "CA1"
    pcm = float_to_pcm16(tone(8000, 0.1))
    media = {"event": "media", "stream_sid": "MZ1", "media": {"chunk": "2", "timestamp": "200"}}
    audio = serializer.deserialize(json.dumps({**media, "media": {"payload": base64.b64encode(pcm).decode()}}))
    assert isinstance(audio, CallerAudio) and 0 < len(audio.data) <= 3 * len(pcm)  # 24 kHz, less the resampler's lag
    odd = serializer.deserialize(json.dumps({**media, "media": {"payload": base64.b64encode(b"abc").decode()}}))
    assert isinstance(odd, Ignored) and "not whole 16-bit samples" in odd.reason
    sent: list[dict[str, Any]] = []
    for _ in range(3):
        sent += [json.loads(m) for m in serializer.serialize(delta("item_a", float_to_pcm16(tone(24000, 0.1))))]
    sent += [json.loads(m) for m in serializer.serialize({"type": "response.output_audio.done", "item_id": "item_a"})]
    payloads = [base64.b64decode(m["media"]["payload"]) for m in sent if m["event"] == "media"]
    assert payloads and all(len(p) % 320 == 0 for p in payloads)
    assert all(m["stream_sid"] == "MZ1" for m in sent)
    assert abs(sum(len(p) for p in payloads) - 4800) <= 320  # 300 ms at 8 kHz, 16-bit
    assert [json.loads(m) for m in serializer.clear()[0]] == [{"event": "clear", "stream_sid": "MZ1"}]
    refused = serializer.deserialize(with_format(EXOTEL_START, "media_format", {"encoding": "audio/x-mulaw"}))
    assert isinstance(refused, Ignored) and "second start" in refused.reason
    mulaw = {"encoding": "audio/x-mulaw", "sample_rate": "8000"}
    started = MediaStreamSerializer(ExotelDialect()).deserialize(with_format(EXOTEL_START, "media_format", mulaw))
    assert isinstance(started, CallStarted) and started.audio == CarrierAudio("pcmu", 8000)
    eight_bit = {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "8"}
    refused = MediaStreamSerializer(ExotelDialect()).deserialize(with_format(EXOTEL_START, "media_format", eight_bit))
    assert isinstance(refused, Unservable) and "neither 16-bit audio/x-raw nor audio/x-mulaw" in refused.reason


def test_plivo_play_audio_checkpoints_and_clear_audio() -> None:
    serializer = MediaStreamSerializer(PlivoDialect())
    started = serializer.deserialize(json.dumps(PLIVO_START))
    assert isinstance(started, CallStarted) and started.audio == CarrierAudio("pcmu", 8000)
    assert started.custom_parameters == {"extra_headers": "userId=12345;sessionId=abc-xyz"}
    stream = PLIVO_START["start"]["streamId"]
    media = {"event": "media", "streamId": stream, "media": {"track": "inbound", "chunk": 41, "payload": "//8="}}
    assert serializer.deserialize(json.dumps(media)) == CallerAudio(b"\xff\xff")
    messages = [json.loads(m) for m in serializer.serialize(delta("item_a", b"\xff" * 800))]
    payload = base64.b64encode(b"\xff" * 800).decode()
    assert messages[0] == {
        "event": "playAudio",
        "streamId": stream,
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": payload},
    }
    checkpoint = messages[-1]
    assert checkpoint["event"] == "checkpoint" and checkpoint["streamId"] == stream
    played = {"event": "playedStream", "streamId": stream, "name": checkpoint["name"]}
    assert serializer.deserialize(json.dumps(played)) == MarkPlayed(checkpoint["name"])
    cleared = serializer.deserialize(json.dumps({"event": "clearedAudio", "streamId": stream}))
    assert isinstance(cleared, Ignored) and not cleared.malformed
    assert [json.loads(m) for m in serializer.clear()[0]] == [{"event": "clearAudio", "streamId": stream}]
    l16 = MediaStreamSerializer(PlivoDialect()).deserialize(
        with_format(PLIVO_START, "mediaFormat", {"encoding": "audio/x-l16", "sampleRate": 16000})
    )
    assert isinstance(l16, CallStarted) and l16.audio == CarrierAudio("l16-le", 16000)
    refused = MediaStreamSerializer(PlivoDialect()).deserialize(
        with_format(PLIVO_START, "mediaFormat", {"encoding": "audio/x-l16", "sampleRate": 24000})
    )
    assert isinstance(refused, Unservable) and "sampleRate 24000 is not supported" in refused.reason


def make_client(tmp_path: Path) -> TestClient:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"server:\n  data_dir: {tmp_path / 'data'}\n")
    return TestClient(
        create_app(Runtime.from_config(load_config(config_file, environ={}))), base_url="http://127.0.0.1:8000"
    )


def test_plivo_answer_xml_streams_to_the_media_socket(tmp_path: Path) -> None:
    client = make_client(tmp_path)
    headers = {"X-Forwarded-Host": "abc.example.org", "X-Forwarded-Proto": "https"}
    response = client.post("/v1/telephony/plivo/answer", data={"CallUUID": "c1"}, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    assert '<Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000">' in response.text
    assert ">wss://abc.example.org/v1/telephony/plivo/media</Stream></Response>" in response.text


def closed_with(client: TestClient, path: str, messages: list[str]) -> tuple[int, str]:
    with client.websocket_connect(f"ws://127.0.0.1:8000{path}") as ws:
        for message in messages:
            ws.send_text(message)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    return closed.value.code, closed.value.reason


def test_streams_that_cannot_be_served_are_closed_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(tmp_path)
    opus = with_format(TELNYX_START, "media_format", {"encoding": "OPUS", "sample_rate": 16000, "channels": 1})
    code, reason = closed_with(client, "/v1/telephony/telnyx/media", [json.dumps({"event": "connected"}), opus])
    assert code == 1003 and "'OPUS' is not supported" in reason
    alaw = with_format(EXOTEL_START, "media_format", {"encoding": "audio/x-alaw"})
    code, reason = closed_with(client, "/v1/telephony/exotel/media", ["{not json", alaw])
    assert code == 1003 and "neither 16-bit audio/x-raw nor audio/x-mulaw" in reason
    code, reason = closed_with(client, "/v1/telephony/plivo/media", [json.dumps({"event": "stop"})])
    assert (code, reason) == (1000, "stopped before start")
    monkeypatch.setattr(carrier_call, "START_TIMEOUT_S", 0.3)
    code, reason = closed_with(client, "/v1/telephony/telnyx/media", [json.dumps({"event": "media", "media": {}})])
    assert code == 1008 and reason == "no start message within 0.3 s"


def test_a_stream_of_malformed_messages_is_closed_with_the_last_reason(tmp_path: Path) -> None:
    client = make_client(tmp_path)
    garbage = ["{not json"] * (carrier_call.MAX_MALFORMED_IN_A_ROW - 1) + [json.dumps({"event": 7})]
    code, reason = closed_with(client, "/v1/telephony/plivo/media", garbage)
    assert (code, reason) == (
        1008,
        f"{carrier_call.MAX_MALFORMED_IN_A_ROW} malformed messages in a row, the last: no event name",
    )
