"""The Twilio Media Streams wire format (sans-I/O) and the TwiML webhook with its signature
check, on the real app without loading models. The call itself: tests/e2e/test_twilio_calls.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from cosyagent.config import load_config
from cosyagent.runtime import Runtime
from cosyagent.transports.media_stream import (
    CallerAudio,
    CallStarted,
    CallStopped,
    Ignored,
    KeyPressed,
    MarkPlayed,
    MediaStreamSerializer,
)
from cosyagent.transports.twilio import FRAME_BYTES, TwilioDialect
from cosyagent.web.app import create_app
from cosyagent.web.telephony import twilio_signature

TOKEN = "12345"
# Twilio's documented example (Security > Validating requests): this URL, these parameters,
# auth token 12345.
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def start(serializer: MediaStreamSerializer) -> None:
    body = {"streamSid": "MZ1", "callSid": "CA1", "customParameters": {"x": "y"}, "mediaFormat": {}}
    assert isinstance(serializer.deserialize(json.dumps({"event": "start", "start": body})), CallStarted)


def delta(item_id: str, n_bytes: int) -> dict[str, Any]:
    audio = base64.b64encode(bytes(range(256)) * (n_bytes // 256) + bytes(n_bytes % 256)).decode()
    return {"type": "response.output_audio.delta", "item_id": item_id, "delta": audio}


def test_reply_audio_leaves_in_20_ms_frames_followed_by_a_mark() -> None:
    serializer = MediaStreamSerializer(TwilioDialect())
    assert serializer.serialize(delta("item_a", 800)) == []  # no stream yet
    start(serializer)
    messages = [json.loads(m) for m in serializer.serialize(delta("item_a", 800))]
    assert [m["event"] for m in messages] == ["media"] * 5 + ["mark"]
    assert all(m["streamSid"] == "MZ1" for m in messages)
    payloads = [base64.b64decode(m["media"]["payload"]) for m in messages[:5]]
    assert {len(p) for p in payloads} == {FRAME_BYTES}
    assert serializer.serialize({"type": "response.done"}) == []


def test_marks_say_what_was_heard_and_a_clear_truncates_to_it() -> None:
    serializer = MediaStreamSerializer(TwilioDialect())
    start(serializer)
    marks = [json.loads(serializer.serialize(delta("item_a", 800))[-1])["mark"]["name"] for _ in range(3)]
    assert isinstance(serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": marks[0]}})), MarkPlayed)
    messages, truncate = serializer.clear()
    assert [json.loads(m) for m in messages] == [{"event": "clear", "streamSid": "MZ1"}]
    assert truncate == {
        "type": "conversation.item.truncate",
        "item_id": "item_a",
        "content_index": 0,
        "audio_end_ms": 100,
    }
    # Twilio echoes the marks the clear dropped: not heard, and not an error either.
    dropped = serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": marks[1]}}))
    assert isinstance(dropped, Ignored) and not dropped.malformed
    unknown = serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": "nobody"}}))
    assert isinstance(unknown, Ignored) and unknown.malformed


def test_a_clear_after_everything_was_heard_truncates_nothing() -> None:
    serializer = MediaStreamSerializer(TwilioDialect())
    start(serializer)
    name = json.loads(serializer.serialize(delta("item_a", 800))[-1])["mark"]["name"]
    serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": name}}))
    assert serializer.clear()[1] is None


def payload_bytes(messages: list[str]) -> bytes:
    return b"".join(base64.b64decode(m["media"]["payload"]) for m in map(json.loads, messages) if m["event"] == "media")


def test_speech_over_the_reply_clears_at_once_and_a_cough_resends_what_was_not_heard() -> None:
    serializer = MediaStreamSerializer(TwilioDialect())
    start(serializer)
    sent = [serializer.serialize(delta("item_a", 800)) for _ in range(3)]
    first_mark = json.loads(sent[0][-1])["mark"]["name"]
    serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": first_mark}}))
    # Speech starts: Twilio's buffer is emptied now, before the speech is confirmed.
    assert [json.loads(m) for m in serializer.pause()] == [{"event": "clear", "streamSid": "MZ1"}]
    assert serializer.pause() == []  # once
    # Audio the session still hands over while paused is kept, not sent.
    late = delta("item_a", 800)
    assert serializer.serialize(late) == []
    # Marks the clear dropped, echoed anyway, are not counted as heard.
    second_mark = json.loads(sent[1][-1])["mark"]["name"]
    dropped = serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": second_mark}}))
    assert isinstance(dropped, Ignored) and not dropped.malformed
    # It was a cough: everything after the first echoed mark goes out again, in order, then a mark.
    again = serializer.resume()
    assert json.loads(again[-1])["event"] == "mark"
    expected = payload_bytes(sent[1]) + payload_bytes(sent[2]) + base64.b64decode(late["delta"])
    assert payload_bytes(again) == expected
    assert serializer.resume() == []
    # A later barge-in that is confirmed truncates to what was heard: the first 100 ms.
    assert serializer.pause()
    messages, truncate = serializer.clear()
    assert messages == []  # the pause already cleared Twilio's buffer
    assert truncate is not None and truncate["audio_end_ms"] == 100


def test_a_pause_with_nothing_playing_sends_nothing() -> None:
    serializer = MediaStreamSerializer(TwilioDialect())
    assert serializer.pause() == []  # no stream
    start(serializer)
    assert serializer.pause() == [] and serializer.resume() == []  # no reply
    name = json.loads(serializer.serialize(delta("item_a", 800))[-1])["mark"]["name"]
    serializer.deserialize(json.dumps({"event": "mark", "mark": {"name": name}}))
    assert serializer.pause() == []  # all of it heard: the buffer is already empty
    messages = serializer.serialize(delta("item_a", 800))  # so the reply is not held back
    assert [json.loads(m)["event"] for m in messages] == ["media"] * 5 + ["mark"]


def test_inbound_messages_and_bad_ones() -> None:
    serializer = MediaStreamSerializer(TwilioDialect())
    frame = base64.b64encode(b"\xff" * FRAME_BYTES).decode()
    media = json.dumps({"event": "media", "media": {"track": "inbound", "payload": frame}})
    assert isinstance(serializer.deserialize(media), Ignored)  # before start
    start(serializer)
    assert serializer.deserialize(media) == CallerAudio(b"\xff" * FRAME_BYTES)
    assert serializer.deserialize(json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}})) == KeyPressed("5")
    assert isinstance(serializer.deserialize(json.dumps({"event": "stop", "stop": {}})), CallStopped)
    bad = [
        "{not json",
        b"\xff\xfe",
        "[1, 2]",
        json.dumps({"event": "media", "media": {"payload": "!!not base64!!"}}),
        json.dumps({"event": "media", "media": {"payload": 7}}),
        json.dumps({"event": "media"}),
        json.dumps({"event": "dtmf", "dtmf": {"digit": "55"}}),
        json.dumps({"event": "surprise", "surprise": {}}),
        json.dumps({"no": "event"}),
    ]
    for message in bad:
        result = serializer.deserialize(message)
        assert isinstance(result, Ignored) and result.malformed, message


def test_signature_matches_twilios_documented_example() -> None:
    assert twilio_signature(TOKEN, DOC_URL, list(DOC_PARAMS.items())) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def make_app(tmp_path: Path, telephony: str = "") -> FastAPI:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"server:\n  data_dir: {tmp_path / 'data'}\n" + telephony)
    return create_app(Runtime.from_config(load_config(config_file, environ={})))


def test_voice_webhook_answers_twiml_with_the_stream_url(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path), base_url="http://127.0.0.1:8000")
    response = client.post("/v1/telephony/twilio/voice", data={"CallSid": "CA1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert 'url="ws://127.0.0.1:8000/v1/telephony/twilio/media"' in response.text  # plain http, no proxy
    assert "<Response><Connect><Stream " in response.text
    forwarded = {"X-Forwarded-Host": "abc.example.org", "X-Forwarded-Proto": "https"}
    response = client.post("/v1/telephony/twilio/voice", data={"CallSid": "CA1"}, headers=forwarded)
    assert 'url="wss://abc.example.org/v1/telephony/twilio/media"' in response.text


def test_voice_webhook_checks_the_signature_when_a_token_is_set(tmp_path: Path) -> None:
    telephony = f"telephony:\n  public_host: agent.example.com\n  twilio_auth_token: '{TOKEN}'\n"
    app = make_app(tmp_path, telephony)
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    params = {"CallSid": "CA1", "From": "+15550001111", "To": "+15550002222"}
    url = "https://agent.example.com/v1/telephony/twilio/voice"
    good = twilio_signature(TOKEN, url, list(params.items()))
    ok = client.post("/v1/telephony/twilio/voice", data=params, headers={"X-Twilio-Signature": good})
    assert ok.status_code == 200, ok.text
    assert 'url="wss://agent.example.com/v1/telephony/twilio/media"' in ok.text
    for headers in ({}, {"X-Twilio-Signature": good[:-2] + "A="}):
        refused = client.post("/v1/telephony/twilio/voice", data=params, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "invalid_signature"
    signed = {"X-Twilio-Signature": good}
    tampered = client.post("/v1/telephony/twilio/voice", data={**params, "To": "+1999"}, headers=signed)
    assert tampered.status_code == 403


def test_unknown_telephony_keys_are_config_errors(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("telephony:\n  twilio_token: x\n")
    try:
        load_config(config_file, environ={})
    except ValueError as exc:
        assert "telephony" in str(exc)
    else:
        raise AssertionError("an unknown telephony key was accepted")


def test_media_stream_without_a_valid_signature_is_refused(tmp_path: Path) -> None:
    telephony = f"telephony:\n  public_host: agent.example.com\n  twilio_auth_token: '{TOKEN}'\n"
    client = TestClient(make_app(tmp_path, telephony), base_url="http://127.0.0.1:8000")
    for headers in ({}, {"X-Twilio-Signature": twilio_signature("wrong", "wss://agent.example.com/x", [])}):
        try:
            with client.websocket_connect("/v1/telephony/twilio/media", headers=headers):
                raise AssertionError("the handshake was accepted")
        except (WebSocketDenialResponse, WebSocketDisconnect) as exc:
            assert getattr(exc, "status_code", 403) == 403 or getattr(exc, "code", 0) == 1008
