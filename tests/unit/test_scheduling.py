"""The deadline scheduler: engine jobs run in the order their output is needed, across
engines and event loops, and no lane is lost to a cancelled or failed job."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from cosyagent.config import ConfigError, load_config
from cosyagent.engines.base import CancelToken, EngineCancelled, EngineExecutor
from cosyagent.engines.scheduling import (
    BACKGROUND_AHEAD_S,
    DeadlineScheduler,
    holding_lane,
    job_deadline,
    needed_by,
)


async def _hold_lane(scheduler: DeadlineScheduler) -> asyncio.Event:
    """Occupy the only lane until the returned event is set."""
    done = asyncio.Event()
    started = asyncio.Event()

    async def holder() -> None:
        await scheduler.acquire(time.monotonic())
        started.set()
        await done.wait()
        scheduler.release()

    asyncio.get_running_loop().create_task(holder())
    await started.wait()
    return done


async def test_a_freed_lane_goes_to_the_earliest_deadline_then_in_arrival_order() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    release_first = await _hold_lane(scheduler)
    order: list[str] = []
    now = time.monotonic()

    async def job(name: str, deadline: float) -> None:
        await scheduler.acquire(deadline)
        order.append(name)
        scheduler.release()

    jobs = [
        asyncio.create_task(job("later clause", now + 2.0)),
        asyncio.create_task(job("first clause A", now)),
        asyncio.create_task(job("speculative asr", now + 0.3)),
        asyncio.create_task(job("first clause B", now)),
    ]
    await asyncio.sleep(0.01)
    assert order == [], "nothing runs while the lane is held"
    release_first.set()
    await asyncio.wait_for(asyncio.gather(*jobs), 2.0)
    assert order == ["first clause A", "first clause B", "speculative asr", "later clause"]
    assert scheduler.waiting == 0


async def test_a_job_cancelled_while_waiting_loses_its_turn_but_no_lane() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    release_first = await _hold_lane(scheduler)
    cancelled = asyncio.create_task(scheduler.acquire(time.monotonic()))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    ran = asyncio.Event()

    async def next_job() -> None:
        await scheduler.acquire(time.monotonic())
        ran.set()
        scheduler.release()

    waiting = asyncio.create_task(next_job())
    release_first.set()
    await asyncio.wait_for(ran.wait(), 1.0)
    await waiting
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # Both lanes' worth of acquires succeed at once again: the only lane is free.
    await asyncio.wait_for(scheduler.acquire(time.monotonic()), 0.5)
    scheduler.release()


async def test_lanes_bound_how_many_run_at_once_and_resize_takes_effect() -> None:
    scheduler = DeadlineScheduler(lanes=2)
    running = 0
    most = 0

    async def job() -> None:
        nonlocal running, most
        await scheduler.acquire(time.monotonic())
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        scheduler.release()

    await asyncio.wait_for(asyncio.gather(*(job() for _ in range(6))), 2.0)
    assert most == 2
    scheduler.resize(1)
    most = 0
    await asyncio.wait_for(asyncio.gather(*(job() for _ in range(4))), 2.0)
    assert most == 1
    with pytest.raises(ValueError):
        scheduler.resize(0)


async def test_a_lane_released_from_another_thread_wakes_this_loop() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    await scheduler.acquire(time.monotonic())
    releaser = threading.Timer(0.05, scheduler.release)
    releaser.start()
    await asyncio.wait_for(scheduler.acquire(time.monotonic()), 2.0)
    scheduler.release()
    releaser.join()


async def test_needed_by_dates_the_jobs_of_its_task_only() -> None:
    due = time.monotonic() + 5.0
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def dating_task() -> float:
        with needed_by(lambda: due):
            inside.set()
            await leave.wait()
            return job_deadline()

    dating = asyncio.create_task(dating_task())
    await inside.wait()
    assert job_deadline() <= time.monotonic()  # this task's jobs are undated: needed now
    leave.set()
    assert await dating == due
    assert job_deadline() < due


class _Recorder:
    """Engine work that records the order jobs ran in; the job named ``blocker`` waits for ``gate``."""

    def __init__(self, blocker: str) -> None:
        self.blocker = blocker
        self.gate = threading.Event()
        self.order: list[str] = []

    def work(self, name: str) -> str:
        if name == self.blocker:
            self.gate.wait(2.0)
        self.order.append(name)
        return name


async def test_engines_sharing_a_scheduler_serve_the_earliest_deadline_first() -> None:
    """Two engines (as ASR and TTS are), one lane: a later clause queued first still waits
    for another session's first clause and a transcript that is needed sooner."""
    scheduler = DeadlineScheduler(lanes=1)
    asr, tts = EngineExecutor("test-asr", scheduler), EngineExecutor("test-tts", scheduler)
    recorder = _Recorder("blocker")
    work, gate, order = recorder.work, recorder.gate, recorder.order
    now = time.monotonic()

    async def dated(executor: EngineExecutor, name: str, due: float) -> str:
        with needed_by(lambda: due):
            return await executor.run(lambda: work(name))

    blocker = asyncio.create_task(dated(tts, "blocker", now))
    await asyncio.sleep(0.02)
    later = asyncio.create_task(dated(tts, "session A clause 2", now + 3.0))
    await asyncio.sleep(0.01)
    first = asyncio.create_task(dated(tts, "session B clause 1", now))
    transcript = asyncio.create_task(dated(asr, "session C transcript", now + 0.1))
    await asyncio.sleep(0.02)
    assert tts.queue_depth == 3 and asr.queue_depth == 1
    gate.set()
    await asyncio.wait_for(asyncio.gather(blocker, later, first, transcript), 3.0)
    assert order == ["blocker", "session B clause 1", "session C transcript", "session A clause 2"]
    assert tts.queue_depth == 0 and asr.queue_depth == 0
    asr.shutdown()
    tts.shutdown()


async def test_a_cancelled_or_failing_job_frees_its_lane() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    engine = EngineExecutor("test", scheduler)
    token = CancelToken()
    token.cancel()
    with pytest.raises(EngineCancelled):
        await engine.run(lambda: "never runs", token)

    def fail() -> None:
        raise RuntimeError("model error")

    with pytest.raises(RuntimeError):
        await engine.run(fail)
    assert await asyncio.wait_for(engine.run(lambda: "still served"), 1.0) == "still served"
    engine.shutdown()
    with pytest.raises(RuntimeError):  # a shut-down engine refuses, and gives its lane back
        await engine.run(lambda: None)
    await asyncio.wait_for(scheduler.acquire(time.monotonic()), 0.5)
    scheduler.release()


async def test_observers_hear_how_long_each_job_waited_and_how_late_it_started() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    engine = EngineExecutor("tts", scheduler)
    heard: list[tuple[str, float, float]] = []
    stop = scheduler.observe(lambda name, waited, late: heard.append((name, waited, late)))
    with needed_by(lambda: time.monotonic() + 10.0):
        await engine.run(lambda: None)
    assert len(heard) == 1 and heard[0][0] == "tts"
    assert 0.0 <= heard[0][1] < 1.0 and heard[0][2] < -9.0  # started ~10 s before it was due
    stop()
    await engine.run(lambda: None)
    assert len(heard) == 1
    engine.shutdown()


async def test_jobs_started_for_someone_are_counted_and_background_ones_are_not() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    engine = EngineExecutor("tts", scheduler)
    await engine.run(lambda: None)  # a request's job: needed now
    with needed_by(lambda: time.monotonic() + 2.0):
        await engine.run(lambda: None)  # a reply's later clause
    assert scheduler.foreground_jobs_started == 2
    with needed_by(lambda: time.monotonic() + BACKGROUND_AHEAD_S):
        await engine.run(lambda: None)  # the server timing its engines while idle
    async with holding_lane(scheduler):
        await engine.run(lambda: None)  # on a held lane: counted as well
    assert scheduler.foreground_jobs_started == 3
    engine.shutdown()


async def test_a_held_lane_runs_two_engines_back_to_back_and_lets_nothing_in_between() -> None:
    """A language check, then the transcript: a turn-model job due sooner that arrives while the
    check runs still waits for both, though the lane falls free between them."""
    scheduler = DeadlineScheduler(lanes=1)
    check, asr = EngineExecutor("test-lid", scheduler), EngineExecutor("test-asr", scheduler)
    turn = EngineExecutor("test-turn", scheduler)
    recorder = _Recorder("language check")
    work, gate, order = recorder.work, recorder.gate, recorder.order
    now = time.monotonic()

    async def transcript() -> None:
        with needed_by(lambda: now + 0.5):
            async with holding_lane(scheduler):
                await check.run(lambda: work("language check"))
                await asr.run(lambda: work("transcript"))

    started: list[str] = []
    stop = scheduler.observe(lambda name, waited, late: started.append(name))
    held = asyncio.create_task(transcript())
    await asyncio.sleep(0.02)
    verdict = asyncio.create_task(turn.run(lambda: work("turn model")))  # due now: before the transcript
    await asyncio.sleep(0.02)
    gate.set()
    await asyncio.wait_for(asyncio.gather(held, verdict), 3.0)
    assert order == ["language check", "transcript", "turn model"]
    assert started == ["test-lid", "test-asr", "test-turn"], "every job is observed, held lane or not"
    stop()
    for engine in (check, asr, turn):
        engine.shutdown()


async def test_a_held_lane_cancelled_mid_job_is_freed_when_that_job_ends() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    engine = EngineExecutor("test-asr", scheduler)
    gate = threading.Event()

    async def transcript() -> None:
        async with holding_lane(scheduler):
            await engine.run(lambda: gate.wait(2.0))

    task = asyncio.create_task(transcript())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    waiter = asyncio.create_task(scheduler.acquire(time.monotonic()))
    await asyncio.sleep(0.05)
    assert not waiter.done(), "the job still runs on the cores: its lane is not free yet"
    gate.set()
    await asyncio.wait_for(waiter, 1.0)
    scheduler.release()
    engine.shutdown()


async def test_jobs_needed_later_yield_to_a_reply_waiting_for_the_llm() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    scheduler.yield_ahead_s = 0.3
    began = time.monotonic()
    first_clause_came = scheduler.waiting_on_llm(began)
    ran: dict[str, float] = {}

    async def job(name: str, needed_at: float) -> None:
        await scheduler.acquire(needed_at)
        ran[name] = time.monotonic() - began
        scheduler.release()

    await asyncio.sleep(0.01)
    sooner = asyncio.create_task(job("transcript of a turn that ended before the reply began", began - 0.05))
    later = asyncio.create_task(job("transcript of a turn that ended after", time.monotonic()))
    far = asyncio.create_task(job("clause with 2 s of audio before it", began + 2.0))
    playing = asyncio.create_task(job("clause with 0.2 s of audio before it", time.monotonic() + 0.2))
    await asyncio.wait_for(asyncio.gather(sooner, playing), 1.0)
    await asyncio.sleep(0.1)
    assert set(ran) == {
        "transcript of a turn that ended before the reply began",
        "clause with 0.2 s of audio before it",
    }, (
        "jobs due since after the reply began, or needed far ahead, wait for its first clause, the lane free;"
        " a job needed before the reply, or soon, does not (a reply playing would fall silent)"
    )
    assert ran["clause with 0.2 s of audio before it"] < 0.1
    first_clause_came()
    first_clause_came()  # said again when the reply ends: counted once
    await asyncio.wait_for(asyncio.gather(later, far), 1.0)
    assert ran["transcript of a turn that ended after"] < 0.25
    assert ran["clause with 2 s of audio before it"] < 0.25
    await asyncio.wait_for(scheduler.acquire(time.monotonic() + 5.0), 0.5)  # no reply waits now
    scheduler.release()


async def test_the_most_urgent_reply_waiting_for_the_llm_holds_jobs_back() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    scheduler.yield_ahead_s = 0.5
    now = time.monotonic()
    later_reply = scheduler.waiting_on_llm(now)
    earlier_reply = scheduler.waiting_on_llm(now - 0.1)
    between = asyncio.create_task(scheduler.acquire(now - 0.05))  # needed after one began, before the other
    await asyncio.sleep(0.05)
    assert not between.done(), "the earlier reply holds back a job needed after it began"
    earlier_reply()
    await asyncio.wait_for(between, 0.5)  # the later reply does not: the job was needed before it began
    scheduler.release()
    later_reply()


async def test_a_reply_that_waits_too_long_for_the_llm_holds_no_one_back() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    scheduler.yield_ahead_s = 0.3
    began = time.monotonic()
    first_clause_came = scheduler.waiting_on_llm(began)  # and it never comes: a stalled LLM
    cpu_before = time.process_time()
    await asyncio.sleep(0.01)
    await asyncio.wait_for(scheduler.acquire(time.monotonic()), 2.0)  # due since after the reply began
    waited = time.monotonic() - began
    scheduler.release()
    assert 0.25 <= waited <= 0.6, waited  # let go once the reply had waited yield_ahead_s
    # ... and meanwhile the scheduler looked again when that was due, not in a busy loop (which
    # would take a core from the LLM it yields to)
    assert time.process_time() - cpu_before < 0.1, "the scheduler spun while the job yielded"
    await asyncio.wait_for(scheduler.acquire(time.monotonic()), 0.1)  # and later jobs do not wait at all
    scheduler.release()
    first_clause_came()


async def test_a_yielding_job_runs_once_its_deadline_comes_close() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    scheduler.yield_ahead_s = 0.3
    first_clause_came = scheduler.waiting_on_llm()  # and it never comes
    submitted = time.monotonic()
    await asyncio.wait_for(scheduler.acquire(submitted + 0.5), 2.0)
    waited = time.monotonic() - submitted
    scheduler.release()
    first_clause_came()
    assert 0.15 <= waited <= 0.6, waited  # ran ~0.3 s before its deadline, not at submission


def test_a_look_again_left_on_a_closed_loop_does_not_strand_the_next_loops_jobs() -> None:
    scheduler = DeadlineScheduler(lanes=1)  # one per process, and event loops come and go (tests, threads)
    scheduler.yield_ahead_s = 0.3
    first_clause_came = scheduler.waiting_on_llm()  # and it never comes
    first_loop_began = time.monotonic()

    async def held_then_gone() -> None:  # held as needed far ahead: a look again in 0.3 s, on this loop
        job = asyncio.create_task(scheduler.acquire(first_loop_began + 0.6))
        await asyncio.sleep(0.02)
        job.cancel()

    asyncio.run(held_then_gone())  # the loop closes before that look again

    async def held_on_the_next_loop() -> float:
        submitted = time.monotonic()
        await asyncio.wait_for(scheduler.acquire(submitted + 0.6), 2.0)  # its look again comes later
        scheduler.release()
        return time.monotonic() - submitted

    waited = asyncio.run(held_on_the_next_loop())
    first_clause_came()
    assert 0.2 <= waited <= 0.6, waited  # ran ~0.3 s before its deadline, not stranded


async def test_nothing_yields_without_an_llm_on_these_cores() -> None:
    scheduler = DeadlineScheduler(lanes=1)  # yield_ahead_s None: an LLM elsewhere
    first_clause_came = scheduler.waiting_on_llm()
    await asyncio.wait_for(scheduler.acquire(time.monotonic() + 5.0), 0.2)
    scheduler.release()
    first_clause_came()


@pytest.mark.parametrize("value", [-1, 10001])
def test_the_yield_setting_is_checked(tmp_path: Path, value: int) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"scheduler:\n  yield_to_llm_ms: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"scheduler.yield_to_llm_ms must be 0-10000"):
        load_config(path, environ={})
    path.write_text("scheduler:\n  yield_to_llm_ms: 0\n", encoding="utf-8")
    assert load_config(path, environ={}).scheduler.yield_to_llm_ms == 0


async def test_idle_means_no_job_runs_or_waits_and_no_reply_waits_for_the_llm() -> None:
    scheduler = DeadlineScheduler(lanes=1)
    assert scheduler.idle
    release = await _hold_lane(scheduler)
    assert not scheduler.idle, "a job runs"
    waiter = asyncio.create_task(scheduler.acquire(time.monotonic()))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.wait_for(waiter, 1.0)
    assert not scheduler.idle, "the waiting job runs now"
    scheduler.release()
    assert scheduler.idle
    first_clause_came = scheduler.waiting_on_llm()
    assert not scheduler.idle, "a reply waits for its first clause"
    first_clause_came()
    assert scheduler.idle
