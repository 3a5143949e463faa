"""An engine's own slots (CosyVoice's): how many run, wait and are refused, and what the server
counts as someone's work."""

from __future__ import annotations

import asyncio
import time

import pytest

from cosyagent.engines.base import CancelToken, EngineCancelled, EngineUnavailableError
from cosyagent.engines.own_slots import OwnSlots
from cosyagent.engines.scheduling import BACKGROUND_AHEAD_S, needed_by


async def test_jobs_past_the_slots_wait_and_past_the_queue_are_refused() -> None:
    slots = OwnSlots("Engine", slots=1, max_queue=1)
    free_first = await slots.take(CancelToken())
    waiting = asyncio.create_task(slots.take(CancelToken()))
    await asyncio.sleep(0)
    assert slots.queue_depth == 2 and not waiting.done()
    with pytest.raises(EngineUnavailableError, match="Engine is busy: 1 generating, 1 queued"):
        await slots.take(CancelToken())
    free_first()
    free_first()  # freeing twice frees once
    free_second = await asyncio.wait_for(waiting, 1)
    assert slots.queue_depth == 1
    free_second()
    assert slots.queue_depth == 0 and slots.foreground_jobs_started == 2


async def test_a_job_cancelled_while_it_waits_gives_its_slot_back() -> None:
    slots = OwnSlots("Engine", slots=1, max_queue=4)
    free = await slots.take(CancelToken())
    token = CancelToken()
    waiting = asyncio.create_task(slots.take(token))
    await asyncio.sleep(0)
    token.cancel()
    free()
    with pytest.raises(EngineCancelled):
        await waiting
    assert slots.queue_depth == 0 and slots.foreground_jobs_started == 1
    (await asyncio.wait_for(slots.take(CancelToken()), 1))()  # the slot is free again


async def test_the_servers_own_timing_jobs_are_not_counted_as_someones_work() -> None:
    slots = OwnSlots("Engine", slots=2, max_queue=0)
    with needed_by(lambda: time.monotonic() + BACKGROUND_AHEAD_S + 60):
        (await slots.take(CancelToken()))()
    assert slots.foreground_jobs_started == 0
    with needed_by(lambda: time.monotonic() + 1):
        (await slots.take(CancelToken()))()
    assert slots.foreground_jobs_started == 1


def test_at_least_one_slot_and_a_queue_not_negative() -> None:
    for slots, queue in ((0, 1), (1, -1)):
        with pytest.raises(ValueError):
            OwnSlots("Engine", slots=slots, max_queue=queue)
