"""Admission control on a real server with the real embedded models: the capacity measured at
startup, a session past ``server.capacity`` refused up front on the WebSocket (an ``error``
event, then close 1013) and over WebRTC (503 + Retry-After) while the admitted session goes
on and completes its response, and what ``/metrics`` and ``/v1/health`` say about it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from cosyagent.engines.scheduling import cpu_scheduler
from cosyagent.runtime import Runtime
from tests.e2e.conftest import LiveServer, configured, until_idle
from tests.e2e.realtime_client import Transcript, collect, finished_response, said_to_its_end
from tests.e2e.test_metrics import scrape, scrape_until, value
from tests.e2e.webrtc_client import loopback_candidates, make_offer


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_candidates():
        yield


@pytest.fixture
def capacity_one(live_server: LiveServer) -> Iterator[Runtime]:
    """The live server with ``server.capacity: 1`` for the test's duration."""
    with configured(live_server.runtime, "server", capacity=1):
        yield live_server.runtime


@pytest.fixture
async def idle(live_server: LiveServer) -> AsyncIterator[None]:
    await scrape_until(live_server, lambda s: value(s, "cosyagent_active_sessions", transport="websocket") == 0)
    yield


def client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key")


def refused(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], transport: str) -> float:
    return value(samples, "cosyagent_sessions_refused_total", transport=transport, reason="server_at_capacity")


async def test_past_capacity_new_sessions_are_refused_and_the_admitted_one_goes_on(
    live_server: LiveServer, idle: None, capacity_one: Runtime
) -> None:
    before = await scrape(live_server)
    assert value(before, "cosyagent_capacity_sessions") == 1
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as admitted:
        await admitted.session.update(
            session={"type": "realtime", "max_output_tokens": 16, "audio": {"input": {"turn_detection": None}}}
        )
        await admitted.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
        )
        await admitted.response.create()
        # A shared, saturated CPU can slow the niced LLM to a token a second or worse: a generous timeout.
        reply = asyncio.create_task(collect(admitted, Transcript(), until=finished_response, timeout=300))
        try:
            async with client(live_server).realtime.connect(model="cosyagent-realtime") as second:
                error = await asyncio.wait_for(anext(aiter(second)), 20)
                assert error.type == "error" and error.error.code == "server_at_capacity"
                assert error.error.message == (
                    "the server is at its capacity of 1 conversation (set by server.capacity); try again later"
                )
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(second.recv(), 20)
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "server_at_capacity")

            caller, offer = await make_offer()
            try:
                async with httpx.AsyncClient(base_url=live_server.base_url) as http:
                    headers = {"Content-Type": "application/sdp"}
                    call = await http.post("/realtime/calls", content=offer, headers=headers)
            finally:
                await caller.close()
            assert call.status_code == 503 and call.headers["retry-after"] == "5"
            assert call.json()["error"]["code"] == "server_at_capacity"
            assert "capacity of 1 conversation" in call.json()["error"]["message"]
            assert live_server.runtime.active_sessions == 1  # the refusals held no slot

            seen = await reply
        finally:
            reply.cancel()
    done = seen.of_type("response.done")[-1]
    assert said_to_its_end(done.response) and seen.audio(done.response.id)
    after = await scrape(live_server)
    assert refused(after, "websocket") == refused(before, "websocket") + 1
    assert refused(after, "webrtc") == refused(before, "webrtc") + 1


async def test_auto_capacity_comes_from_the_engines_measured_at_startup(live_server: LiveServer) -> None:
    runtime = live_server.runtime
    estimate = runtime.capacity.estimate
    assert estimate is not None and estimate.sessions >= 1
    costs = estimate.costs
    # Generous bounds: the models really ran (no stage is free), and nothing took absurdly long.
    assert 0.01 < costs.asr_s < 60 and 0.01 < costs.tts_first_clause_s < 60 and 0.01 < costs.tts_rtf < 50
    assert costs.llm_first_token_s is not None and 0 < costs.llm_first_token_s < 60  # the embedded LLM counts
    assert costs.llm_tokens_per_s is not None and 0.1 < costs.llm_tokens_per_s < 10_000
    assert estimate.turn_s >= costs.asr_s + costs.tts_first_clause_s + costs.llm_first_token_s
    assert estimate.budget_s == runtime.config.server.latency_budget_ms / 1000

    with configured(runtime, "server", capacity="auto"):
        samples = await scrape(live_server)
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{live_server.base_url}/health")).json()
    sessions = min(estimate.sessions, runtime.config.server.max_sessions)
    assert value(samples, "cosyagent_capacity_sessions") == sessions
    for stage in ("asr", "llm_first_token", "llm_reply", "tts_first_clause"):
        assert value(samples, "cosyagent_capacity_turn_cost_seconds", stage=stage) > 0
    assert value(samples, "cosyagent_capacity_turn_cost_seconds", stage="turn") == pytest.approx(estimate.turn_s)
    capacity = health["capacity"]
    assert (capacity["sessions"], capacity["setting"], capacity["measured"]) == (sessions, "auto", estimate.sessions)
    assert capacity["turn_cost_seconds"]["turn"] == pytest.approx(estimate.turn_s, abs=1e-3)


async def test_auto_capacity_is_measured_again_when_idle_and_not_while_a_session_or_request_arrives(
    live_server: LiveServer, idle: None
) -> None:
    runtime = live_server.runtime
    meter = runtime.capacity
    await until_idle(runtime)  # the sessions of the tests before may still be winding down
    before = meter.measurements
    assert await meter.measure_if_idle(), "an idle server measures again"  # the real engines
    estimate = runtime.capacity.estimate
    assert meter.measurements == before + 1 and estimate is not None and estimate.sessions >= 1
    async with httpx.AsyncClient() as http:
        capacity = (await http.get(f"{live_server.base_url}/health")).json()["capacity"]
    assert capacity["measurements"] == before + 1
    assert meter.measured_at is not None
    assert capacity["measured_at"] == meter.measured_at.isoformat(timespec="seconds")
    assert capacity["turn_cost_seconds"]["turn"] == pytest.approx(estimate.turn_s, abs=1e-3)

    # A session admitted while the engines are being timed: that measurement is dropped.
    measuring = asyncio.create_task(meter.measure_if_idle())
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as arrived:
        created = await asyncio.wait_for(anext(aiter(arrived)), 20)
        assert created.type == "session.created"
        assert not await asyncio.wait_for(measuring, 120), "its costs would include the session's work"
    assert meter.measurements == before + 1 and runtime.capacity.estimate is estimate

    # A request's engine job while they are being timed (the openai SDK's speech): dropped too.
    await until_idle(runtime)  # the session just closed may still be winding down
    measuring = asyncio.create_task(meter.measure_if_idle())
    for _ in range(2000):  # until its first engine job (the TTS) runs
        if not cpu_scheduler().idle or measuring.done():
            break
        await asyncio.sleep(0.005)
    speech = await client(live_server).audio.speech.create(
        model="tts-1", voice="joe", input="Hello there.", response_format="wav"
    )
    assert speech.content[:4] == b"RIFF"
    assert not await asyncio.wait_for(measuring, 120), "its costs would include the request's work"
    assert meter.measurements == before + 1 and runtime.capacity.estimate is estimate


async def test_the_bench_counts_a_session_refused_at_admission_as_refused_not_failed(
    live_server: LiveServer, idle: None, capacity_one: Runtime
) -> None:
    """``cosyagent bench --admission shipped`` measures the server's own admission: the bench's
    WebSocket and WebRTC drivers must record a refusal (code, message, how soon) rather than an
    error, so that issue #13's eight-session target ("answered, or refused up front") is judged."""
    from benchmarks import webrtc_driver, ws_driver
    from benchmarks.records import Plan, questions

    plan = Plan(turns=1, barge_ins=0, timeout_s=30.0)
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as admitted:
        await asyncio.wait_for(anext(aiter(admitted)), 20)  # session.created: the one slot is held
        for run_session in (ws_driver.run_session, webrtc_driver.run_session):
            record = await asyncio.wait_for(run_session(live_server.base_url, 1, questions(), plan), 60)
            assert record.errors == [] and record.turns == []
            assert record.refused is not None and record.refused["code"] == "server_at_capacity"
            assert "capacity of 1 conversation" in record.refused["message"]
            assert 0 < record.refused["after_ms"] < 20_000
        assert live_server.runtime.active_sessions == 1
