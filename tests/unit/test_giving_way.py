"""Jobs that give way (``giving_way``: a transcript's draft): one running is cancelled as soon as
another job waits for its lane or a reply waits for the LLM's first clause, and while it runs the
scheduler still counts as idle (it delays nobody)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cosyagent.engines.base import CancelToken, EngineCancelled, EngineExecutor
from cosyagent.engines.scheduling import DeadlineScheduler, gives_way, giving_way, needed_by


def until_cancelled(token: CancelToken, started: threading.Event) -> str:
    """A job that works until its token fires (5 s at most), as an ONNX run stops when terminated."""
    started.set()
    limit = time.monotonic() + 5.0
    while not token.cancelled and time.monotonic() < limit:
        time.sleep(0.002)
    token.raise_if_cancelled()
    return "finished"


async def start_draft(engine: EngineExecutor) -> tuple[asyncio.Task[str], CancelToken]:
    token, started = CancelToken(), threading.Event()
    with needed_by(lambda: time.monotonic() + 0.64), giving_way():
        assert gives_way()
        task = asyncio.create_task(engine.run(lambda: until_cancelled(token, started), token))
    assert not gives_way()
    for _ in range(100):
        if started.is_set():
            break
        await asyncio.sleep(0.01)
    assert started.is_set()
    return task, token


async def test_a_job_waiting_for_the_lane_stops_the_job_giving_way() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    asr, tts = EngineExecutor("test-asr", scheduler), EngineExecutor("test-tts", scheduler)
    draft, token = await start_draft(asr)
    assert scheduler.idle, "a job that gives way delays nobody"
    began = time.monotonic()
    assert await asyncio.wait_for(tts.run(lambda: "first clause"), 2.0) == "first clause"
    assert time.monotonic() - began < 1.0 and token.cancelled
    with pytest.raises(EngineCancelled):
        await draft
    assert scheduler.idle
    asr.shutdown()
    tts.shutdown()


async def test_a_reply_waiting_for_the_llm_stops_it_too() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    asr = EngineExecutor("test-asr", scheduler)
    draft, _ = await start_draft(asr)
    first_clause_came = scheduler.waiting_on_llm()
    with pytest.raises(EngineCancelled):
        await asyncio.wait_for(draft, 2.0)
    first_clause_came()
    assert scheduler.idle
    asr.shutdown()


async def test_jobs_giving_way_wait_for_each_other_and_stop_no_one() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    asr = EngineExecutor("test-asr", scheduler)
    first, first_token = await start_draft(asr)
    second_token = CancelToken()
    with giving_way():
        second = asyncio.create_task(asr.run(lambda: "second draft", second_token))
    await asyncio.sleep(0.1)
    assert not first_token.cancelled and not second.done()
    assert scheduler.idle, "one runs, one waits: both would give way"
    first_token.cancel()  # (the first one's own session stops it)
    with pytest.raises(EngineCancelled):
        await first
    assert await asyncio.wait_for(second, 2.0) == "second draft"
    asr.shutdown()


async def test_a_job_without_a_cancel_token_cannot_give_way() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    asr = EngineExecutor("test-asr", scheduler)
    release = threading.Event()
    with giving_way():
        job = asyncio.create_task(asr.run(lambda: release.wait(5.0)))
    await asyncio.sleep(0.05)
    assert not scheduler.idle, "nothing could stop it: it counts as work"
    release.set()
    assert await asyncio.wait_for(job, 2.0)
    asr.shutdown()
