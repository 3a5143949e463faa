"""When a pause starts its transcript at the early mark (cosyagent.runtime.speculation):
only where a wasted transcript delays nobody else's work."""

from __future__ import annotations

import time

from cosyagent.engines.scheduling import DeadlineScheduler
from cosyagent.runtime.llm_slots import LLMSlots
from cosyagent.runtime.speculation import room_to_speculate


async def test_a_lone_session_speculates_early_however_busy_the_server() -> None:
    scheduler, slots = DeadlineScheduler(lanes=1), LLMSlots(2)
    await scheduler.acquire(time.monotonic())
    with slots.held(slots.conversation()):
        assert room_to_speculate(1, scheduler, slots)
    scheduler.release()


async def test_with_others_only_while_no_engine_job_and_no_llm_request_runs() -> None:
    scheduler, slots = DeadlineScheduler(lanes=1), LLMSlots(2)
    assert room_to_speculate(4, scheduler, slots)
    assert room_to_speculate(4, scheduler, None)  # an LLM elsewhere does not use these cores
    with slots.held(slots.conversation()):
        assert not room_to_speculate(4, scheduler, slots), "the embedded LLM decodes a reply"
    await scheduler.acquire(time.monotonic())
    assert not room_to_speculate(4, scheduler, slots), "an engine job runs"
    scheduler.release()
    first_clause_came = scheduler.waiting_on_llm()
    assert not room_to_speculate(4, scheduler, None), "a reply waits for its first clause"
    first_clause_came()
    assert room_to_speculate(4, scheduler, slots)
