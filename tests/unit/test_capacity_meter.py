"""``server.capacity: auto`` measured again when idle: the estimate is replaced only by a
measurement that ran while no session was admitted, the watch waits while the server is busy,
a failing measurement keeps the last estimate, and stop leaves no task behind."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from cosyagent.config import ConfigError, ServerConfig, load_config
from cosyagent.engines.scheduling import job_deadline
from cosyagent.runtime.capacity import CapacityEstimate, TurnCosts, estimate_capacity, llm_question
from cosyagent.runtime.capacity_meter import AFTER_ANY_REAL_JOB_S, CapacityMeter

SLOW = TurnCosts(asr_s=0.6, tts_first_clause_s=0.4, tts_rtf=0.1)  # a busy moment at startup
QUICK = TurnCosts(asr_s=0.15, tts_first_clause_s=0.1, tts_rtf=0.1)


def estimate(costs: TurnCosts) -> CapacityEstimate:
    return estimate_capacity(costs, budget_s=3.0, end_of_turn_s=0.5)


class Server:
    """What the meter watches: whether the server is idle, how much work of others (sessions
    admitted, engine jobs for requests) has arrived, and what each measurement gives (in order)."""

    def __init__(self, *results: CapacityEstimate | Exception) -> None:
        self.busy = False
        self.admitted = 0
        self.admit_during_next = 0  # how many of the next measurements a session arrives during
        self.deadlines: list[float] = []  # what the measurement's engine jobs were dated
        self.attempts: list[int] = []
        self._results = list(results)

    async def measure(self, attempt: int) -> CapacityEstimate:
        self.attempts.append(attempt)
        self.deadlines.append(job_deadline() - time.monotonic())
        await asyncio.sleep(0.01)  # the engines at work
        if self.admit_during_next:
            self.admit_during_next -= 1
            self.admitted += 1
        result = self._results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def meter(self) -> CapacityMeter:
        return CapacityMeter(self.measure, lambda: not self.busy, lambda: self.admitted, poll_s=0.01)


async def until(condition: object, timeout_s: float = 2.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_slow_start_is_measured_again_once_due_and_idle() -> None:
    server = Server(estimate(SLOW), estimate(QUICK))
    meter = server.meter()
    await meter.measure()
    assert meter.estimate is not None and meter.estimate.sessions < estimate(QUICK).sessions
    started_at = meter.measured_at
    server.busy = True
    meter.watch(every_s=0.05)
    try:
        await asyncio.sleep(0.2)
        assert meter.measurements == 1, "not measured again while sessions are served"
        server.busy = False
        await until(lambda: meter.measurements == 2)
    finally:
        await meter.stop()
    assert meter.estimate == estimate(QUICK)  # the new estimate replaces the old
    health = meter.health(ServerConfig())
    assert health["measured"] == estimate(QUICK).sessions and health["measurements"] == 2
    assert started_at is not None and meter.measured_at is not None and meter.measured_at > started_at
    assert health["measured_at"] == meter.measured_at.isoformat(timespec="seconds")
    # the startup measurement came before any session; the one again gives way to any real job
    assert server.deadlines[0] < 1.0 and server.deadlines[1] > AFTER_ANY_REAL_JOB_S - 60


async def test_a_measurement_during_which_a_session_was_admitted_is_dropped_and_tried_again_soon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server(estimate(QUICK), estimate(SLOW), estimate(SLOW))
    meter = server.meter()
    await meter.measure()
    server.admit_during_next = 1
    with caplog.at_level(logging.INFO, logger="cosyagent.runtime.capacity_meter"):
        meter.watch(every_s=0.3)
        try:
            await until(lambda: "dropped" in caplog.text)
            dropped_at = time.monotonic()
            assert meter.estimate == estimate(QUICK) and meter.measurements == 1, "its costs include that session's"
            await until(lambda: meter.measurements == 2)
            assert time.monotonic() - dropped_at < 0.2, "tried again at the next idle look, not a period later"
        finally:
            await meter.stop()
    assert meter.estimate == estimate(SLOW)  # a slower machine admits fewer
    # each measurement, the dropped one too, asks the LLM a question of its own (llm_question)
    assert server.attempts == [1, 2, 3] and len({llm_question(n) for n in server.attempts}) == 3


async def test_a_busy_server_is_not_measured() -> None:
    server = Server(estimate(QUICK))
    meter = server.meter()
    server.busy = True
    assert not await meter.measure_if_idle()
    assert server.deadlines == [] and meter.estimate is None


async def test_a_failing_measurement_keeps_the_estimate_and_waits_a_period(caplog: pytest.LogCaptureFixture) -> None:
    server = Server(estimate(QUICK), RuntimeError("the LLM server is restarting"), estimate(SLOW))
    meter = server.meter()
    await meter.measure()
    with caplog.at_level(logging.WARNING, logger="cosyagent.runtime.capacity_meter"):
        meter.watch(every_s=0.3)
        try:
            await until(lambda: "the last estimate stays" in caplog.text)
            await asyncio.sleep(0.1)
            assert len(server.deadlines) == 2, "tried again at once after a failure"
            assert meter.estimate == estimate(QUICK)
            await until(lambda: meter.measurements == 2)  # a period later
        finally:
            await meter.stop()
    assert meter.estimate == estimate(SLOW)


async def test_stop_ends_the_watch_and_zero_never_starts_one() -> None:
    meter = Server(estimate(QUICK)).meter()
    meter.watch(every_s=0)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "capacity-meter"]
    meter.watch(every_s=60)
    assert [t for t in asyncio.all_tasks() if t.get_name() == "capacity-meter"]
    await meter.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "capacity-meter"]


def test_the_period_is_checked(tmp_path: Path) -> None:
    assert load_config().server.capacity_remeasure_s == 600
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  capacity_remeasure_s: -1\n")
    with pytest.raises(ConfigError, match="capacity_remeasure_s"):
        load_config(path)
