"""The session registry alone: registering transports, the session limit, counting per
transport, the configuration a request brings, and the sink a session is built on."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_config import SessionConfig
from cosyagent.runtime.capacity import CapacityEstimate, TurnCosts, estimate_capacity
from cosyagent.runtime.capacity_meter import CapacityMeter
from cosyagent.runtime.sessions import SessionConfigError, SessionRefused, SessionRegistry
from cosyagent.telemetry import SessionObserver, Telemetry
from cosyagent.transports.websocket import ClientPlayback


class SilentVAD:
    def speech_probability(self, frame: np.ndarray) -> float:
        return 0.0

    def reset(self) -> None: ...


class FakeRuntime:
    def __init__(self, max_sessions: int, capacity: int | str = "auto") -> None:
        self.telemetry = Telemetry(process_metrics=False)
        self.config = SimpleNamespace(
            server=SimpleNamespace(max_sessions=max_sessions, capacity=capacity),
            realtime=SimpleNamespace(output_lead_ms=300.0, reply_ahead=True, read_ahead=True),
        )
        self.capacity = CapacityMeter(self._not_measured, idle=lambda: False, others_work=lambda: 0)  # set by a test
        self.llm_slots = None  # no embedded llama.cpp server: nothing read ahead

    def new_core(
        self, model: str | None, observer: SessionObserver | None = None, *, audio_on_media_tracks: bool = False
    ) -> RealtimeCore:
        return RealtimeCore(
            SessionConfig(model=model or "default", instructions="", voice="jf_alpha"),
            vad=SilentVAD(),
            tts_sample_rate=24000,
            voice_exists=lambda voice: voice == "jf_alpha",
            audio_on_media_tracks=audio_on_media_tracks,
        )

    @staticmethod
    async def _not_measured(attempt: int) -> CapacityEstimate:
        raise AssertionError("these tests set the estimate; they never measure")

    def session_engines(self) -> Any:
        return SimpleNamespace(llm=None, asr=None, tts=None)  # (no turn ends, no replies in these tests)


def registry(max_sessions: int = 2, capacity: int | str = "auto") -> tuple[SessionRegistry, FakeRuntime]:
    runtime = FakeRuntime(max_sessions, capacity)
    sessions = SessionRegistry(runtime)  # type: ignore[arg-type]
    sessions.register("websocket")
    sessions.register("webrtc")
    return sessions, runtime


def test_registered_transports_have_metric_labels_at_once() -> None:
    _, runtime = registry()
    value = runtime.telemetry.registry.get_sample_value
    assert value("cosyagent_active_sessions", {"transport": "webrtc"}) == 0
    assert value("cosyagent_sessions_total", {"transport": "websocket"}) == 0


def test_the_limit_counts_every_transport_and_a_release_frees_one_slot_once() -> None:
    sessions, runtime = registry(max_sessions=2)
    first = sessions.admit("websocket", model=None)
    second = sessions.admit("webrtc", model=None, audio_on_media_tracks=True)
    assert len(sessions) == 2
    with pytest.raises(SessionRefused) as refused:
        sessions.admit("websocket", model=None)
    assert (refused.value.code, refused.value.message) == ("session_limit", "the server is at its limit of 2 sessions")
    refusals = ("cosyagent_sessions_refused_total", {"transport": "websocket", "reason": "session_limit"})
    assert runtime.telemetry.registry.get_sample_value(*refusals) == 1
    first.release()
    first.release()  # idempotent
    assert len(sessions) == 1
    with sessions.admit("websocket", model=None):
        assert len(sessions) == 2
    assert len(sessions) == 1
    second.release()
    assert len(sessions) == 0


def test_past_the_measured_capacity_sessions_are_refused_with_their_own_code() -> None:
    sessions, runtime = registry(max_sessions=4)
    costs = TurnCosts(asr_s=0.5, tts_first_clause_s=0.5, tts_rtf=0.4, llm_first_token_s=0.1, llm_tokens_per_s=75.0)
    runtime.capacity.estimate = estimate_capacity(costs, budget_s=3.0, end_of_turn_s=0.5)  # 1.5 s a turn: 1
    kept = sessions.admit("websocket", model=None)
    with pytest.raises(SessionRefused) as refused:
        sessions.admit("webrtc", model=None, audio_on_media_tracks=True)
    assert refused.value.code == "server_at_capacity"
    assert "capacity of 1 conversation (measured: one turn costs 1.50 s" in refused.value.message
    refusals = ("cosyagent_sessions_refused_total", {"transport": "webrtc", "reason": "server_at_capacity"})
    assert runtime.telemetry.registry.get_sample_value(*refusals) == 1
    runtime.config.server.capacity = 2  # a number overrides the measurement
    with sessions.admit("webrtc", model=None, audio_on_media_tracks=True):
        assert len(sessions) == 2
    kept.release()
    assert len(sessions) == 0


def test_a_refused_session_configuration_takes_no_slot() -> None:
    sessions, _ = registry()
    with pytest.raises(SessionConfigError) as refused:
        sessions.admit("webrtc", model=None, session={"audio": {"output": {"voice": "nobody"}}})
    assert refused.value.message.startswith("session: ") and refused.value.code == "invalid_value"
    assert len(sessions) == 0


def test_an_unregistered_transport_is_a_bug() -> None:
    sessions, _ = registry()
    with pytest.raises(ValueError, match="not registered"):
        sessions.admit("sip", model=None)


def test_the_session_is_built_on_a_sink_of_the_kind_its_core_expects() -> None:
    sessions, _ = registry()

    async def send(event: dict[str, Any]) -> None: ...

    with sessions.admit("websocket", model="m") as admission:
        session = admission.session(ClientPlayback(), send)
        assert session.core.config.model == "m" and not session.core.audio_on_media_tracks
    with sessions.admit("webrtc", model=None, audio_on_media_tracks=True) as admission, pytest.raises(TypeError):
        admission.session(ClientPlayback(), send)  # its audio would have nowhere to play
