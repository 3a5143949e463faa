"""The capacity the server admits, and when it is measured.

With ``server.capacity: auto`` the turn costs are measured at startup
(:func:`~cosyagent.runtime.capacity.measure_turn_costs`) and measured again each time the server
has gone ``server.capacity_remeasure_s`` without a measurement and is idle, so that one slow
moment at startup (other services starting at boot, a neighbour's burst on a shared host: one
such start admitted 2 sessions where the machine serves 4) does not size admission for the rest
of the day, and a machine that has become slower stops admitting more than it can serve.

A measurement again (about a second of engine work on two cores) starts only when no session is
open and no engine job runs or waits. Its engine jobs are dated far ahead, so work that arrives
meanwhile goes first, and a measurement during which other work arrived (a session admitted, or
an engine job started for someone else: a ``/v1/audio/*`` request) is dropped: its costs would
include that work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from cosyagent.config import ServerConfig
from cosyagent.engines.scheduling import BACKGROUND_AHEAD_S, needed_by
from cosyagent.runtime.capacity import AdmissionLimit, CapacityEstimate, admission_limit

logger = logging.getLogger(__name__)

POLL_S = 5.0  # how often the watch looks whether a measurement is due and the server idle
# A measurement's engine jobs are needed this far ahead: after any real job, and past
# BACKGROUND_AHEAD_S, so the scheduler does not count them as someone's work.
AFTER_ANY_REAL_JOB_S = max(3600.0, BACKGROUND_AHEAD_S)


class CapacityMeter:
    def __init__(
        self,
        measure: Callable[[int], Awaitable[CapacityEstimate]],
        idle: Callable[[], bool],
        others_work: Callable[[], int],
        *,
        poll_s: float = POLL_S,
    ) -> None:
        """``measure(attempt)`` times a turn on the loaded engines (``attempt``: 1, 2, ... for every
        measurement started, dropped ones included); ``idle``: no session open and no engine
        job running or waiting; ``others_work``: sessions admitted and engine jobs started for anyone
        but a measurement, since startup (a count that only grows)."""
        self._measure = measure
        self._idle = idle
        self._others_work = others_work
        self._poll_s = poll_s
        self.estimate: CapacityEstimate | None = None
        self.measured_at: datetime | None = None
        self.measurements = 0
        self._attempts = 0
        self._last_measured = 0.0  # time.monotonic() of the last measurement (or failed try)
        self._watch: asyncio.Task[None] | None = None

    async def measure(self) -> CapacityEstimate:
        """Measure now, whatever else runs (at startup, before any session)."""
        estimate = await self._measure(self._next_attempt())
        self._accept(estimate)
        return estimate

    async def measure_if_idle(self) -> bool:
        """Measure again if the server is idle; True when the new estimate replaced the old one,
        False when the server was busy or other work arrived during the measurement."""
        if not self._idle():
            return False
        others_work = self._others_work()
        with needed_by(lambda: time.monotonic() + AFTER_ANY_REAL_JOB_S):
            estimate = await self._measure(self._next_attempt())
        if self._others_work() != others_work:
            logger.info("capacity measurement dropped: a session or a request arrived while it ran")
            return False  # (the watch tries again at its next look, once the server is idle)
        before = self.estimate.sessions if self.estimate is not None else None
        self._accept(estimate)
        logger.info("capacity measured again while idle: %s -> %d sessions", before, estimate.sessions)
        return True

    def watch(self, every_s: float) -> None:
        """Measure again every ``every_s`` seconds, each time once the server is idle (0: never)."""
        if every_s > 0 and self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(every_s), name="capacity-meter")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    def limit(self, server: ServerConfig) -> AdmissionLimit:
        """The sessions admitted at once now (``server.capacity``, this estimate when ``auto``,
        capped by ``max_sessions``) and what a session past it is told."""
        return admission_limit(server.capacity, self.estimate, server.max_sessions)

    def report(self, server: ServerConfig) -> tuple[int, dict[str, float]]:
        """The sessions admitted at once now, and the measured per-turn costs (``/metrics``)."""
        return self.limit(server).sessions, self.estimate.stage_seconds() if self.estimate else {}

    def health(self, server: ServerConfig) -> dict[str, Any]:
        sessions, stages = self.report(server)
        estimate = self.estimate
        return {
            "sessions": sessions,
            "setting": server.capacity,
            "measured": estimate.sessions if estimate else None,
            "measured_at": self.measured_at.isoformat(timespec="seconds") if self.measured_at else None,
            "measurements": self.measurements,
            "latency_budget_ms": server.latency_budget_ms,
            "turn_cost_seconds": {stage: round(seconds, 3) for stage, seconds in stages.items()},
            "tts_rtf": round(estimate.costs.tts_rtf, 3) if estimate else None,
        }

    def _next_attempt(self) -> int:
        self._attempts += 1
        return self._attempts

    def _accept(self, estimate: CapacityEstimate) -> None:
        self.estimate = estimate
        self.measured_at = datetime.now(UTC)
        self.measurements += 1
        self._last_measured = time.monotonic()

    async def _watch_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            if time.monotonic() - self._last_measured < every_s:
                continue
            try:
                await self.measure_if_idle()
            except Exception as exc:  # noqa: BLE001  (an engine failing, the LLM restarting: the watch goes on)
                logger.warning("capacity measurement failed, the last estimate stays: %r", exc)
                self._last_measured = time.monotonic()
