"""Telemetry: the metrics it keeps, the stage latencies a session's events yield, and GET /metrics
on the real app (no models loaded). The e2e test repeats it against a real conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cosyagent.config import load_config
from cosyagent.runtime import Runtime
from cosyagent.telemetry import STAGES, SessionObserver, Telemetry
from cosyagent.web.app import create_app

# A loopback Host: the server refuses names it does not know (DNS rebinding; web/local_guard.py).
LOCAL = "http://127.0.0.1"
KEY = "sk-metrics-1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def stage_count(telemetry: Telemetry, stage: str) -> float:
    value = telemetry.registry.get_sample_value("cosyagent_stage_seconds_count", {"stage": stage})
    return value or 0.0


def stage_sum(telemetry: Telemetry, stage: str) -> float:
    return telemetry.registry.get_sample_value("cosyagent_stage_seconds_sum", {"stage": stage}) or 0.0


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": "event_1", **fields}


def speak(observer: SessionObserver, clock: Clock, speech_frames: int, silence_frames: int) -> None:
    for probability in [0.9] * speech_frames + [0.05] * silence_frames:
        clock.advance(0.032)
        observer.vad_frame(probability)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def telemetry() -> Telemetry:
    telemetry = Telemetry(lambda: {"asr": 2, "tts": 0})
    for transport in ("websocket", "webrtc"):  # as the server's transports register themselves
        telemetry.add_transport(transport)
    return telemetry


def test_exposition_parses_and_has_every_metric_from_the_start(telemetry: Telemetry) -> None:
    body, content_type = telemetry.exposition()
    assert content_type.startswith("text/plain")
    found = samples(body.decode())
    for stage in STAGES:
        assert found[("cosyagent_stage_seconds_count", (("stage", stage),))] == 0
        assert ("cosyagent_stage_seconds_bucket", (("le", "0.01"), ("stage", stage))) in found
        assert ("cosyagent_stage_seconds_bucket", (("le", "10.0"), ("stage", stage))) in found
    assert found[("cosyagent_active_sessions", (("transport", "websocket"),))] == 0
    assert found[("cosyagent_active_sessions", (("transport", "webrtc"),))] == 0
    assert found[("cosyagent_responses_total", (("status", "completed"),))] == 0
    assert found[("cosyagent_engine_queue_depth", (("engine", "asr"),))] == 2
    assert found[("cosyagent_engine_queue_depth", (("engine", "tts"),))] == 0
    assert ("process_cpu_seconds_total", ()) in found


def test_openmetrics_when_the_scraper_asks_for_it(telemetry: Telemetry) -> None:
    body, content_type = telemetry.exposition("application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_queue_depths_are_read_at_each_scrape() -> None:
    depths = {"asr": 0, "tts": 0}
    telemetry = Telemetry(lambda: depths, process_metrics=False)
    depths["tts"] = 3
    assert telemetry.registry.get_sample_value("cosyagent_engine_queue_depth", {"engine": "tts"}) == 3
    depths["tts"] = 1
    assert telemetry.registry.get_sample_value("cosyagent_engine_queue_depth", {"engine": "tts"}) == 1


def test_a_spoken_turn_and_its_reply_give_every_turn_stage(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)
    observer.vad_threshold = lambda: 0.5
    observer.opened()
    observer.sent(event("input_audio_buffer.speech_started", audio_start_ms=0, item_id="item_1"))
    speak(observer, clock, speech_frames=30, silence_frames=16)  # 512 ms of silence after the speech
    clock.advance(0.004)
    observer.sent(event("input_audio_buffer.speech_stopped", audio_end_ms=960, item_id="item_1"))
    observer.sent(event("input_audio_buffer.committed", item_id="item_1"))
    clock.advance(0.05)
    observer.sent(event("conversation.item.input_audio_transcription.completed", item_id="item_1", transcript="hi"))
    observer.sent(event("conversation.item.done", item={"id": "item_1", "type": "message", "role": "user"}))
    observer.sent(event("response.created", response={"status": "in_progress"}))
    observer.reply_timings(llm_first_token=0.1, first_clause=0.2, tts_first_audio=0.4)
    clock.advance(0.45)
    observer.sent(event("response.output_audio.delta", response_id="resp_1", delta=""))
    clock.advance(0.1)
    observer.sent(event("response.output_audio.delta", response_id="resp_1", delta=""))
    observer.sent(event("response.done", response={"status": "completed", "status_details": None}))

    assert stage_sum(telemetry, "end_of_turn") == pytest.approx(16 * 0.032 + 0.004)
    assert stage_sum(telemetry, "asr") == pytest.approx(0.05)
    assert stage_sum(telemetry, "response_first_audio") == pytest.approx(0.5)  # only the first delta counts
    assert stage_count(telemetry, "response_first_audio") == 1
    for stage, seconds in (("llm_first_token", 0.1), ("first_clause", 0.2), ("tts_first_audio", 0.4)):
        assert stage_sum(telemetry, stage) == pytest.approx(seconds)
    assert stage_count(telemetry, "barge_in_stop") == 0
    assert telemetry.registry.get_sample_value("cosyagent_responses_total", {"status": "completed"}) == 1
    assert telemetry.registry.get_sample_value("cosyagent_active_sessions", {"transport": "websocket"}) == 1
    assert telemetry.registry.get_sample_value("cosyagent_sessions_total", {"transport": "websocket"}) == 1
    observer.closed()
    observer.closed()  # idempotent
    assert telemetry.registry.get_sample_value("cosyagent_active_sessions", {"transport": "websocket"}) == 0


def test_the_silence_an_idle_timeout_commits_is_no_turn(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)
    observer.opened()
    observer.sent(event("input_audio_buffer.timeout_triggered", item_id="item_9", audio_start_ms=0, audio_end_ms=5000))
    observer.sent(event("input_audio_buffer.committed", item_id="item_9", previous_item_id=None))
    observer.sent(event("conversation.item.done", item={"id": "item_9", "type": "message", "role": "user"}))
    observer.sent(event("response.created", response={"status": "in_progress"}))
    clock.advance(0.2)
    observer.sent(event("response.output_audio.delta", response_id="resp_9", delta=""))
    observer.sent(event("response.done", response={"status": "completed", "status_details": None}))
    assert stage_count(telemetry, "asr") == 0 and stage_count(telemetry, "response_first_audio") == 0
    assert telemetry.registry.get_sample_value("cosyagent_responses_total", {"status": "completed"}) == 1


def test_the_speech_end_follows_the_sessions_vad_threshold(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)
    threshold = 0.5
    observer.vad_threshold = lambda: threshold
    threshold = 0.8  # a session.update changed it
    for probability in [0.9] * 5 + [0.7] * 10:  # 0.7: speech at threshold 0.5, not at 0.8
        clock.advance(0.032)
        observer.vad_frame(probability)
    observer.sent(event("input_audio_buffer.speech_stopped", audio_end_ms=160, item_id="item_1"))
    assert stage_sum(telemetry, "end_of_turn") == pytest.approx(10 * 0.032)


def test_no_end_of_turn_without_server_vad(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)  # its threshold: None, as with no turn detection
    speak(observer, clock, speech_frames=10, silence_frames=10)
    observer.sent(event("input_audio_buffer.speech_stopped", audio_end_ms=320, item_id="item_1"))
    assert stage_count(telemetry, "end_of_turn") == 0


def test_barge_in_is_timed_from_speech_start_to_the_cancelled_response(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("webrtc", clock)
    observer.sent(event("response.created", response={"status": "in_progress"}))
    observer.sent(event("input_audio_buffer.speech_started", audio_start_ms=0, item_id="item_2"))
    clock.advance(0.25)
    cancelled = {"status": "cancelled", "status_details": {"type": "cancelled", "reason": "turn_detected"}}
    observer.sent(event("response.done", response=cancelled))
    assert stage_sum(telemetry, "barge_in_stop") == pytest.approx(0.25)
    assert telemetry.registry.get_sample_value("cosyagent_responses_total", {"status": "cancelled"}) == 1


def test_a_reply_whose_client_left_counts_as_cancelled(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)
    observer.opened()
    observer.sent(event("response.created", response={"status": "in_progress"}))
    observer.closed()
    observer.closed()  # closing twice counts once
    assert telemetry.registry.get_sample_value("cosyagent_responses_total", {"status": "cancelled"}) == 1


def test_a_cough_during_a_reply_is_no_barge_in(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)
    observer.sent(event("response.created", response={"status": "in_progress"}))
    observer.sent(event("input_audio_buffer.speech_started", audio_start_ms=0, item_id="item_2"))
    observer.sent(event("input_audio_buffer.speech_stopped", audio_end_ms=100, item_id="item_2"))
    clock.advance(1.0)
    cancelled = {"status": "cancelled", "status_details": {"type": "cancelled", "reason": "client_cancelled"}}
    observer.sent(event("response.done", response=cancelled))
    assert stage_count(telemetry, "barge_in_stop") == 0


def test_speech_before_a_reply_is_no_barge_in(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)
    observer.sent(event("input_audio_buffer.speech_started", audio_start_ms=0, item_id="item_1"))
    observer.sent(event("response.created", response={"status": "in_progress"}))
    cancelled = {"status": "cancelled", "status_details": {"type": "cancelled", "reason": "turn_detected"}}
    observer.sent(event("response.done", response=cancelled))
    assert stage_count(telemetry, "barge_in_stop") == 0


def test_a_text_turn_gives_no_response_first_audio(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)
    observer.sent(event("conversation.item.added", item={"type": "message"}))
    observer.sent(event("response.created", response={"status": "in_progress"}))
    observer.sent(event("response.output_audio.delta", response_id="resp_1", delta=""))
    assert stage_count(telemetry, "response_first_audio") == 0


def test_error_events_count_by_code(telemetry: Telemetry, clock: Clock) -> None:
    observer = telemetry.session_observer("websocket", clock)
    observer.sent(event("error", error={"type": "invalid_request_error", "code": "invalid_json", "message": "x"}))
    observer.sent(event("error", error={"type": "invalid_request_error", "code": "invalid_json", "message": "y"}))
    observer.sent(event("error", error={"type": "server_error", "code": None, "message": "z"}))
    get = telemetry.registry.get_sample_value
    assert get("cosyagent_errors_total", {"source": "realtime", "code": "invalid_json"}) == 2
    assert get("cosyagent_errors_total", {"source": "realtime", "code": "server_error"}) == 1


# --- GET /metrics on the app ---------------------------------------------------------------


def make_client(tmp_path: Path, api_keys: list[str]) -> TestClient:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"server:\n  data_dir: {tmp_path / 'data'}\n  api_keys: {api_keys!r}\n")
    return TestClient(create_app(Runtime.from_config(load_config(config_file, environ={}))), base_url=LOCAL)


def test_metrics_endpoint_is_open_without_api_keys_and_counts_http_errors(tmp_path: Path) -> None:
    client = make_client(tmp_path, [])
    assert client.get("/v1/no-such-route").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("cosyagent_errors_total", (("code", "not_found"), ("source", "http")))] == 1
    assert found[("cosyagent_engine_queue_depth", (("engine", "asr"),))] == 0


def test_metrics_endpoint_asks_for_a_key_when_keys_are_configured(tmp_path: Path) -> None:
    client = make_client(tmp_path, [KEY, "other-key"])
    refused = client.get("/metrics")
    assert refused.status_code == 401  # the API key middleware guards it, as it guards /v1
    assert refused.json()["error"]["message"].startswith("You didn't provide an API key")
    assert (
        client.get("/metrics", headers={"Authorization": "Bearer wrong"}).json()["error"]["code"] == "invalid_api_key"
    )
    assert client.get("/v1/health").status_code == 401  # the same rule as health
    response = client.get("/metrics", headers={"Authorization": "Bearer other-key"})
    assert response.status_code == 200
    found = samples(response.text)
    assert found[("cosyagent_errors_total", (("code", "invalid_api_key"), ("source", "http")))] == 1
    # the two 401s without a key have code null: counted by their type
    assert found[("cosyagent_errors_total", (("code", "invalid_request_error"), ("source", "http")))] == 2
