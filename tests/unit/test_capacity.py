"""The capacity formula with numbers, the admission limit it gives, its configuration and metrics."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from cosyagent.config import ConfigError, ServerConfig, load_config
from cosyagent.runtime.capacity import TurnCosts, admission_limit, estimate_capacity
from cosyagent.telemetry import Telemetry

# A Kokoro-like synthesizer (RTF 0.4), a short utterance's ASR, the embedded LLM at 60 tokens/s.
EMBEDDED = TurnCosts(asr_s=0.4, tts_first_clause_s=0.5, tts_rtf=0.4, llm_first_token_s=0.1, llm_tokens_per_s=60.0)


def test_a_turn_is_the_asr_the_whole_llm_reply_and_the_first_clause() -> None:
    estimate = estimate_capacity(EMBEDDED, budget_s=3.0, end_of_turn_s=0.5, reply_tokens=30)
    assert estimate.turn_s == pytest.approx(0.4 + (0.1 + 30 / 60) + 0.5)  # 1.5 s
    # A second session: 0.5 + (2 * 0.4 - 0.34 hidden by the silence wait) + 2 * (0.6 + 0.5) = 3.16 s > 3 s
    assert estimate.latency_bound == 1
    assert estimate.streaming_bound == 2  # 2 * 0.4 of the machine keeps up, 3 * 0.4 does not
    assert estimate.sessions == 1 and estimate.fits_budget
    assert estimate.stage_seconds() == pytest.approx(
        {"asr": 0.4, "llm_first_token": 0.1, "llm_reply": 0.6, "tts_first_clause": 0.5, "turn": 1.5}
    )


def test_the_streaming_bound_caps_a_generous_budget() -> None:
    estimate = estimate_capacity(EMBEDDED, budget_s=20.0, end_of_turn_s=0.5, reply_tokens=30)
    assert (estimate.latency_bound, estimate.streaming_bound, estimate.sessions) == (13, 2, 2)
    fast_tts = TurnCosts(asr_s=0.2, tts_first_clause_s=0.1, tts_rtf=0.06)  # Piper-like, external LLM
    estimate = estimate_capacity(fast_tts, budget_s=3.0, end_of_turn_s=0.5)
    assert estimate.turn_s == pytest.approx(0.3)  # the external LLM's cost is not ours
    # n-th first audio: 0.5 + (0.2 n - 0.34) + 0.1 n = 0.16 + 0.3 n <= 3 s up to n = 9
    assert (estimate.latency_bound, estimate.streaming_bound, estimate.sessions) == (9, 16, 9)
    assert "llm_reply" not in estimate.stage_seconds()


def test_replies_decoded_together_make_each_session_wait_for_the_prompts_only() -> None:
    """As measured at a start on the 2-core Xeon (2026-12-02), where sessions ending their turns
    at once were answered at p95 1.9-2.9 s (four), 3.2 s (five) and 9 s (eight)."""
    xeon = TurnCosts(
        asr_s=0.157,
        tts_first_clause_s=0.085,
        tts_rtf=0.064,
        llm_first_token_s=0.203,
        llm_tokens_per_s=6 / 0.277,
        turn_model_s=0.08,
    )
    together = estimate_capacity(xeon, budget_s=3.0, end_of_turn_s=0.5, reply_tokens=6, parallel_llm=True)
    # n = 4: 0.5 + (4 * 0.237 - 0.34) + 4 * (0.203 + 0.085) + 0.277 = 2.54 s; n = 5: 3.07 s
    assert (together.latency_bound, together.sessions) == (4, 4)
    assert together.turn_s == pytest.approx(0.157 + 0.48 + 0.085)
    assert together.stage_seconds()["turn_model"] == 0.08
    without_smart_turn = estimate_capacity(
        dataclasses.replace(xeon, turn_model_s=0.0), budget_s=3.0, end_of_turn_s=0.5, reply_tokens=6, parallel_llm=True
    )
    assert without_smart_turn.latency_bound == 5  # n = 5: 0.5 + 0.445 + 1.44 + 0.277 = 2.66 s
    one_at_a_time = estimate_capacity(xeon, budget_s=3.0, end_of_turn_s=0.5, reply_tokens=30)
    assert one_at_a_time.latency_bound == 1  # each waits for the whole replies before it (~1.6 s a turn)


def test_a_turn_over_the_budget_still_admits_one_session() -> None:
    slow = TurnCosts(asr_s=2.0, tts_first_clause_s=2.0, tts_rtf=1.5)
    estimate = estimate_capacity(slow, budget_s=3.0, end_of_turn_s=0.5)
    assert (estimate.latency_bound, estimate.streaming_bound, estimate.sessions) == (0, 0, 1)
    assert not estimate.fits_budget


def test_the_startup_log_warns_only_when_one_turn_exceeds_the_budget(caplog: pytest.LogCaptureFixture) -> None:
    slow = TurnCosts(asr_s=2.0, tts_first_clause_s=2.0, tts_rtf=1.5)
    with caplog.at_level(logging.INFO, logger="cosyagent.runtime.capacity"):
        estimate_capacity(EMBEDDED, budget_s=3.0, end_of_turn_s=0.5).log()
        assert [r.levelno for r in caplog.records] == [logging.INFO]
        assert "capacity: 1 sessions" in caplog.records[0].getMessage()
        caplog.clear()
        estimate_capacity(slow, budget_s=3.0, end_of_turn_s=0.5).log()
    warning = caplog.records[-1]
    assert warning.levelno == logging.WARNING
    assert "exceeds server.latency_budget_ms 3000 after the 500 ms end-of-turn wait" in warning.getMessage()


def test_costs_are_checked() -> None:
    with pytest.raises(ValueError, match="real-time factor"):
        TurnCosts(asr_s=0.1, tts_first_clause_s=0.1, tts_rtf=0.0)
    with pytest.raises(ValueError, match="come together"):
        TurnCosts(asr_s=0.1, tts_first_clause_s=0.1, tts_rtf=0.4, llm_first_token_s=0.1)
    with pytest.raises(ValueError, match="budget_s"):
        estimate_capacity(EMBEDDED, budget_s=0.0, end_of_turn_s=0.5)


def test_the_admission_limit_is_the_capacity_capped_by_max_sessions() -> None:
    estimate = estimate_capacity(EMBEDDED, budget_s=20.0, end_of_turn_s=0.5)  # 2 sessions
    measured = admission_limit("auto", estimate, max_sessions=16)
    assert (measured.sessions, measured.code) == (2, "server_at_capacity")
    assert measured.message == (
        "the server is at its capacity of 2 conversations "
        "(measured: one turn costs 1.50 s of engine time, latency budget 20000 ms)"
    )
    configured = admission_limit(3, estimate, max_sessions=16)
    assert (configured.sessions, configured.code) == (3, "server_at_capacity")
    assert configured.message == "the server is at its capacity of 3 conversations (set by server.capacity)"
    capped = admission_limit(40, estimate, max_sessions=16)
    assert (capped.sessions, capped.code) == (16, "session_limit")
    assert admission_limit("auto", None, max_sessions=16).sessions == 16  # not measured yet


def test_capacity_is_auto_or_a_whole_number(tmp_path: Path) -> None:
    assert ServerConfig().capacity == "auto" and ServerConfig().latency_budget_ms == 2500
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  capacity: 3\n  latency_budget_ms: 2000\n")
    server = load_config(path).server
    assert (server.capacity, server.latency_budget_ms) == (3, 2000)
    for bad in ("lots", "0", "true", "2.5"):
        path.write_text(f"server:\n  capacity: {bad}\n")
        with pytest.raises(ConfigError, match=r"server\.capacity must be 'auto' or a whole number"):
            load_config(path)
    path.write_text("server:\n  latency_budget_ms: 0\n")
    with pytest.raises(ConfigError, match=r"latency_budget_ms must be positive"):
        load_config(path)


def test_metrics_show_the_capacity_and_the_turn_costs_when_scraped() -> None:
    report = {"now": (2, {"asr": 0.4, "turn": 1.5})}
    telemetry = Telemetry(capacity=lambda: report["now"], process_metrics=False)
    telemetry.add_transport("websocket")
    value = telemetry.registry.get_sample_value
    assert value("cosyagent_capacity_sessions") == 2
    assert value("cosyagent_capacity_turn_cost_seconds", {"stage": "turn"}) == 1.5
    assert value("cosyagent_sessions_refused_total", {"transport": "websocket", "reason": "server_at_capacity"}) == 0
    report["now"] = (1, {})
    telemetry.count_refusal("websocket", "server_at_capacity")
    assert value("cosyagent_capacity_sessions") == 1
    assert value("cosyagent_sessions_refused_total", {"transport": "websocket", "reason": "server_at_capacity"}) == 1
