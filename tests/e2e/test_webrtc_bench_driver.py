"""The bench's WebRTC driver (benchmarks/webrtc_driver.py) against a real server: real speech
in, the real models, a real call; the records it fills must be sane and the call must leave
nothing behind."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from collections.abc import Callable, Iterator

import pytest
from aiortc import RTCPeerConnection

from benchmarks.records import BARGE_METRICS, TURN_METRICS, Plan, utterances
from benchmarks.webrtc_caller import loopback_candidates
from benchmarks.webrtc_driver import HEARD_AFTER_MS, run_session
from tests.e2e.conftest import LiveServer, configured

V2V_BOUND_MS = 15000.0  # generous: a shared 2-core machine, models on CPU
# Session 2 speaks utterance 6, then says 7 and interrupts its reply with 8, then 9 with 10.
SESSION = 2


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_candidates():
        yield


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def open_peer_connections() -> list[RTCPeerConnection]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection) and o.connectionState != "closed"]


async def test_run_session_measures_turns_and_a_barge_in_over_webrtc(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="benchmarks.webrtc_driver")
    current = asyncio.current_task()
    tasks_before = set(asyncio.all_tasks())
    clips = utterances()

    # Shorter replies keep the test short (they are played in real time).
    with configured(live_server.runtime, "realtime", max_output_tokens=24):
        record = await run_session(live_server.base_url, SESSION, clips, Plan(turns=1, barge_ins=2, timeout_s=60.0))
    if os.environ.get("WEBRTC_DRIVER_DUMP"):
        print(json.dumps(record.__dict__, indent=1, default=str))

    assert record.errors == []
    assert [t["ok"] for t in record.turns] == [True]
    for turn in record.turns:
        assert set(TURN_METRICS) <= set(turn)
        assert 0 < turn["voice_to_voice_ms"] < V2V_BOUND_MS, turn
        assert turn["end_of_turn_ms"] is not None and turn["end_of_turn_ms"] > 0, turn
        assert turn["asr_ms"] is not None and turn["asr_ms"] >= 0, turn
        # end of turn and ASR come before the reply's first audio; the server's stages are in order
        assert turn["end_of_turn_ms"] + turn["asr_ms"] < turn["voice_to_voice_ms"], turn
        assert 0 < turn["llm_first_token_ms"] <= turn["first_clause_ms"] < turn["tts_first_audio_ms"], turn
        assert turn["user_transcripts"] and any(t.strip() for t in turn["user_transcripts"]), turn
        assert turn["reply_audio_s"] > 0.3, turn

    # Measured, not skipped: the server's hold stops the voice before its cut, and that counts
    # (every WebRTC trial was once skipped for it). A trial may skip only for what the reply said:
    # it was over, or in a pause between clauses, when the interruption was heard (the LLM samples,
    # so a short first clause can end right at BARGE_IN_AFTER_S); one of the two must be measured.
    content_skips = {
        "the reply ended before the barge-in",
        "the reply ended before speech_started",
        "the reply was quiet when the interrupting speech began",
        "the reply's voice stopped before the server could hear the speech (a pause?)",
    }
    assert len(record.barge_ins) == 2
    assert all(trial.get("skipped", "") in content_skips | {""} for trial in record.barge_ins), record.barge_ins
    measured = [trial for trial in record.barge_ins if "skipped" not in trial]
    assert measured, record.barge_ins
    for trial in measured:
        assert set(BARGE_METRICS) <= set(trial)
        assert trial["response_status"] == "cancelled", trial
        assert HEARD_AFTER_MS <= trial["barge_in_stop_ms"] < trial["response_done_ms"] + 1000, trial
        assert trial["reply_voice_after_response_done_ms"] <= 400, trial  # what was in flight (~100 ms)
        assert 0 < trial["voice_to_voice_after_barge_in_ms"] < V2V_BOUND_MS, trial
        assert trial["answer"]["ok"], trial

    # The call is over on both sides: no session, no open peer connection, no task left.
    await wait_until(lambda: live_server.runtime.active_sessions == 0)
    await wait_until(lambda: not open_peer_connections())
    await wait_until(lambda: {t for t in asyncio.all_tasks() if t is not current} <= tasks_before)


async def test_run_session_reports_a_refused_call_and_does_not_raise(live_server: LiveServer) -> None:
    with configured(live_server.runtime, "webrtc", max_calls=0):
        record = await run_session(live_server.base_url, 3, utterances(), Plan(turns=1, barge_ins=0))
    # Refused at admission (webrtc.max_calls): recorded as refused, with the server's code, not failed.
    assert record.turns == [] and record.barge_ins == [] and record.errors == []
    assert record.refused is not None and record.refused["code"] == "call_limit", record.refused
    assert "503" in record.refused["message"], record.refused
    assert not open_peer_connections()
