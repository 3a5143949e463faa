"""Slots an engine keeps for itself instead of the CPU scheduler's lanes (CosyVoice on a GPU:
several requests generate at once, each on a thread of its own).

At most ``slots`` jobs run; the rest wait, up to ``max_queue``, and one more is refused with
:class:`~cosyagent.engines.base.EngineUnavailableError`. The counts are what the server reads
to tell an idle engine from a busy one (:class:`~cosyagent.engines.base.OwnSlotsEngine`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cosyagent.engines.base import CancelToken, EngineCancelled, EngineUnavailableError
from cosyagent.engines.scheduling import BACKGROUND_AHEAD_S, job_deadline


class OwnSlots:
    def __init__(self, engine: str, slots: int, max_queue: int) -> None:
        """``engine``: its name, in the refusal's message."""
        if slots < 1 or max_queue < 0:
            raise ValueError("slots must be at least 1 and max_queue not negative")
        self._engine = engine
        self._free = asyncio.Semaphore(slots)
        self._max_queue = max_queue
        self._waiting = 0
        self._running = 0
        self._foreground_started = 0

    @property
    def queue_depth(self) -> int:
        """Jobs running plus jobs waiting for a slot."""
        return self._running + self._waiting

    @property
    def foreground_jobs_started(self) -> int:
        """Jobs given a slot since the process began, those submitted under a deadline
        :data:`~cosyagent.engines.scheduling.BACKGROUND_AHEAD_S` or more ahead (the server
        timing its engines while idle) aside."""
        return self._foreground_started

    async def take(self, token: CancelToken) -> Callable[[], None]:
        """Wait for a slot (refused at once if ``max_queue`` jobs already wait); returns the call
        that frees it, once. A job whose ``token`` fired while it waited gives its slot back
        and raises :class:`~cosyagent.engines.base.EngineCancelled`."""
        if self._free.locked() and self._waiting >= self._max_queue:
            raise EngineUnavailableError(f"{self._engine} is busy: {self._running} generating, {self._waiting} queued")
        self._waiting += 1
        try:
            await self._free.acquire()
        finally:
            self._waiting -= 1
        if token.cancelled:
            self._free.release()
            raise EngineCancelled()
        self._running += 1
        if job_deadline() - time.monotonic() < BACKGROUND_AHEAD_S:
            self._foreground_started += 1
        freed = False

        def free() -> None:
            nonlocal freed
            if not freed:
                freed = True
                self._running -= 1
                self._free.release()

        return free
