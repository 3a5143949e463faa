"""GET /metrics on a real server with the real embedded models: a spoken conversation with a
barge-in over the Realtime WebSocket (the official openai SDK, real clips), a malformed
client event and an HTTP error, each seen in the Prometheus metrics that follow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from cosyagent.telemetry import STAGES
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect, finished_response, stream_pcm24
from tests.support import read_clip

CHATTY = "You are a storyteller. Always answer with at least three long sentences."

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key")


async def scrape(server: LiveServer) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def active(samples: Samples) -> float:
    return value(samples, "cosyagent_active_sessions", transport="websocket")


async def scrape_until(server: LiveServer, condition: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    deadline = time.monotonic() + timeout
    while not condition(samples := await scrape(server)):
        assert time.monotonic() < deadline, "the metrics did not get there in time"
        await asyncio.sleep(0.1)
    return samples


async def test_a_conversation_and_errors_show_in_the_metrics(live_server: LiveServer) -> None:
    before = await scrape_until(live_server, lambda s: active(s) == 0)  # earlier tests' sessions have ended
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": CHATTY, "max_output_tokens": 200})
        await scrape_until(live_server, lambda s: active(s) == 1)
        seen = Transcript()
        reader = asyncio.create_task(collect(conn, seen, until=finished_response, timeout=120))
        await stream_pcm24(conn, read_clip("en_wealth_tax_q.wav", 24000), trailing_silence_s=0.8)
        while not seen.of_type("response.output_audio.delta"):  # the agent has started talking
            await asyncio.sleep(0.05)
            assert not reader.done(), [r.type for r in seen.events]
        await asyncio.sleep(0.5)
        await conn.session.update(
            session={"type": "realtime", "instructions": "Answer in one short sentence.", "max_output_tokens": 40}
        )
        await stream_pcm24(conn, read_clip("en_dublin_q.wav", 24000), trailing_silence_s=1.5)  # barges in
        await reader
        during = await scrape(live_server)
        await conn.send_raw("{this is not json")
        error = await collect(conn, Transcript(), until="error", timeout=20)
        assert error.of_type("error")[0].error.code == "invalid_json"
    after_close = await scrape_until(live_server, lambda s: active(s) == 0)
    with pytest.raises(openai.BadRequestError) as refused:
        await client(live_server).audio.speech.create(model="tts-1", voice="nobody-here", input="Hello.")
    assert refused.value.code == "voice_not_found"
    after = await scrape(live_server)

    statuses = [e.response.status for e in seen.of_type("response.done")]
    assert statuses[0] == "cancelled" and statuses[-1] in ("completed", "incomplete"), statuses
    assert active(during) == 1
    for stage in STAGES:
        grown = value(during, "cosyagent_stage_seconds_count", stage=stage) - value(
            before, "cosyagent_stage_seconds_count", stage=stage
        )
        assert grown >= 1, stage
        total = value(during, "cosyagent_stage_seconds_sum", stage=stage) - value(
            before, "cosyagent_stage_seconds_sum", stage=stage
        )
        assert total >= 0, stage  # latencies themselves are benchmarks/' business (this machine may be busy)
    # Two turns spoken in real time: each ended after a pause (Smart Turn) or the silence wait (500 ms).
    end_of_turn = [
        value(during, f"cosyagent_stage_seconds_{part}", stage="end_of_turn")
        - value(before, f"cosyagent_stage_seconds_{part}", stage="end_of_turn")
        for part in ("sum", "count")
    ]
    assert 0.1 <= end_of_turn[0] / end_of_turn[1] < 5.0, end_of_turn
    for status in ("cancelled", statuses[-1]):
        grown = value(during, "cosyagent_responses_total", status=status)
        assert grown - value(before, "cosyagent_responses_total", status=status) >= 1, status
    sessions = "cosyagent_sessions_total"
    assert value(after, sessions, transport="websocket") - value(before, sessions, transport="websocket") == 1
    errors = "cosyagent_errors_total"
    invalid_json = {"source": "realtime", "code": "invalid_json"}
    assert value(after_close, errors, **invalid_json) - value(before, errors, **invalid_json) == 1
    voice_not_found = {"source": "http", "code": "voice_not_found"}
    assert value(after, errors, **voice_not_found) - value(after_close, errors, **voice_not_found) == 1
    for engine in ("asr", "tts"):
        assert ("cosyagent_engine_queue_depth", (("engine", engine),)) in after
    # Every transcript and clause waited for the CPU in the deadline scheduler, and says how long.
    for engine in ("asr", "tts"):
        for histogram in ("cosyagent_engine_job_wait_seconds_count", "cosyagent_engine_job_late_seconds_count"):
            assert value(during, histogram, engine=engine) - value(before, histogram, engine=engine) >= 1, (
                histogram,
                engine,
            )
