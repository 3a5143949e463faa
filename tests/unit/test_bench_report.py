"""The bench's report arithmetic: ratios against the baseline, the targets' verdicts and the
stage breakdown that the stacked plot draws."""

from __future__ import annotations

from typing import Any

from benchmarks.bench import ratios, verdicts
from benchmarks.plots import stage_medians


def run(target: str, sessions: int, **p50: float) -> dict[str, Any]:
    summary = {key: {"p50": value, "p95": value * 1.5} for key, value in p50.items()}
    return {"target": target, "sessions": sessions, "summary_ms": summary}


def test_ratios_pair_runs_with_the_same_session_count() -> None:
    runs = [
        run("websocket", 1, voice_to_voice_ms=700.0, end_of_turn_ms=200.0),
        run("baseline", 1, voice_to_voice_ms=1400.0, end_of_turn_ms=800.0),
        run("websocket", 2, voice_to_voice_ms=900.0),
    ]
    table = ratios(runs)
    assert table == {
        "websocket/baseline ×1": {
            "voice_to_voice_ms.p50": 0.5,
            "voice_to_voice_ms.p95": 0.5,
            "end_of_turn_ms.p50": 0.25,
            "end_of_turn_ms.p95": 0.25,
        }
    }


def test_verdicts_say_by_how_much_a_target_is_missed() -> None:
    runs = [
        run("websocket", 1, voice_to_voice_ms=950.0, barge_in_stop_ms=180.0),
        run("websocket", 4, voice_to_voice_ms=1000.0),
        run("baseline", 1, voice_to_voice_ms=1200.0),
    ]
    lines = verdicts(runs, ratios(runs))
    assert "single session voice-to-voice p50: 950 ms > 800: missed by 150 ms" in lines
    assert "single session voice-to-voice p95: 1425 ms > 1200: missed by 225 ms" in lines
    assert "single session barge-in stop p95: 270 ms <= 300: met" in lines
    assert "4 sessions voice-to-voice p95: 1500 ms <= 1500: met" in lines
    assert "voice-to-voice p50 vs baseline: ratio 0.79: missed (21% below, target 30%)" in lines


def test_stage_medians_turn_cumulative_reply_times_into_increments() -> None:
    values = {
        "end_of_turn_ms": [300.0],
        "asr_ms": [40.0],
        "llm_first_token_ms": [100.0],
        "first_clause_ms": [250.0],
        "tts_first_audio_ms": [600.0],
        "voice_to_voice_ms": [1000.0],
    }
    assert stage_medians({"values_ms": values}) == [300.0, 40.0, 100.0, 150.0, 350.0, 60.0]
