"""Which engine job runs next: the one whose output is needed first, across every engine.

The CPU is one resource shared by every engine of the process (ASR, TTS, the turn model each
use all its threads), so engines do not run side by side in their own FIFO queues: each job
waits for a *lane* of the process-wide :class:`DeadlineScheduler`, and a freed lane goes to
the waiting job with the earliest deadline (equal deadlines in arrival order).

A job's deadline is when its output is needed, in :func:`time.monotonic` seconds. The caller
says so with :func:`needed_by` around the engine call: a reply's first clause is needed now,
a later clause when the audio before it runs out, a speculative transcript when the silence
wait can end the turn. Jobs nobody dated (``/v1/audio/speech``, a file transcription) are
needed when they are submitted. Deadlines never move once a job waits, so every job runs
before any job submitted after its deadline: no starvation. A running job is not preempted
(a long one, a whole file's transcription, holds its lane until it ends), unless it was
submitted :func:`giving_way`: work that only saves time later (a transcript's draft) is
cancelled as soon as another job waits for a lane or a reply waits for the LLM.

The embedded LLM runs outside the lanes, in its own process, on the same cores, and its
requests are jobs with deadlines too: while a reply waits for its first clause from it
(:meth:`DeadlineScheduler.waiting_on_llm`, needed since the reply began), a job that is due
and was needed after that reply began waits for it, though the lane is free (another session's
transcript, the first clause of a reply that began later), so the LLM, which runs at a lower
CPU priority than the engines, gets the cores when it holds the most urgent work. A job not
due yet (a later clause, with audio still playing before it) is not held back, lest its reply
fall silent mid-sentence, unless it is needed more than ``yield_ahead_s`` from now: then it
waits too, so no session synthesizes far ahead while another waits for its first clause. A
reply that has waited ``yield_ahead_s`` holds no one back any more (an LLM that stalls must not
stall everyone's engines).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

Deadline = Callable[[], float]
"""Returns, when a job is submitted, the monotonic time its output is needed by."""

BACKGROUND_AHEAD_S = 600.0
"""A job needed this long after its submission, or longer, is background work (the server timing
its engines while idle): :attr:`DeadlineScheduler.foreground_jobs_started` leaves it out."""

_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("engine_job_deadline", default=None)


@contextmanager
def needed_by(deadline: Deadline) -> Iterator[None]:
    """Engine jobs submitted inside this block (in this task) are needed by ``deadline()``."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


_gives_way: contextvars.ContextVar[bool] = contextvars.ContextVar("engine_job_gives_way", default=False)


@contextmanager
def giving_way() -> Iterator[None]:
    """Engine jobs submitted inside this block (in this task) give way: one that runs is cancelled
    (its CancelToken fired) when any other job waits for a lane or a reply for the LLM's first
    clause, and while it runs the scheduler still counts as :attr:`~DeadlineScheduler.idle`."""
    token = _gives_way.set(True)
    try:
        yield
    finally:
        _gives_way.reset(token)


def gives_way() -> bool:
    """Whether a job submitted now gives way (see :func:`giving_way`)."""
    return _gives_way.get()


def job_deadline() -> float:
    """The deadline of a job submitted now: the caller's :func:`needed_by`, else now."""
    deadline = _deadline.get()
    return deadline() if deadline is not None else time.monotonic()


class HeldLane:
    """A lane one caller keeps across several engine jobs (see :func:`holding_lane`)."""

    def __init__(self, scheduler: DeadlineScheduler) -> None:
        self.scheduler = scheduler
        self.last_job: Future[Any] | None = None


_held: contextvars.ContextVar[HeldLane | None] = contextvars.ContextVar("engine_lane_held", default=None)


def held_lane(scheduler: DeadlineScheduler) -> HeldLane | None:
    """The lane of ``scheduler`` that the calling task holds, if any."""
    held = _held.get()
    return held if held is not None and held.scheduler is scheduler else None


@asynccontextmanager
async def holding_lane(scheduler: DeadlineScheduler | None = None) -> AsyncIterator[None]:
    """Run this block's engine jobs back to back on one lane, taken at the block's deadline:
    a result that needs two engines (a language check, then the transcript) lets no other job
    in between, where a lane freed after the first would go to whatever waits."""
    scheduler = scheduler or cpu_scheduler()
    if held_lane(scheduler) is not None:
        yield
        return
    await scheduler.acquire(job_deadline())
    held = HeldLane(scheduler)
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
        running = held.last_job
        if running is None or running.done():
            scheduler.release()
        else:  # cancelled while a job still runs in its thread: the lane is busy until it ends
            running.add_done_callback(lambda _: scheduler.release())


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False
    abandoned: bool = False
    gives_way: bool = False  # its job gives way (giving_way): waiting, it keeps no one from speculating

    @property
    def gone(self) -> bool:
        """Its job was cancelled, or its event loop closed: a lane granted to it would be lost."""
        return self.abandoned or self.loop.is_closed()

    def grant(self) -> None:  # on the waiter's own loop
        if not self.future.done():
            self.future.set_result(None)


@dataclass(order=True)
class _Entry:
    deadline: float
    sequence: int
    waiter: _Waiter = field(compare=False)


class DeadlineScheduler:
    """Grants ``lanes`` concurrent engine runs, earliest deadline first.

    Thread-safe and loop-agnostic: the engines are shared by every event loop of the
    process (tests run several), and lanes are released from worker threads.
    """

    def __init__(self, lanes: int = 1) -> None:
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        self._lock = threading.Lock()
        self._lanes = lanes
        self._free = lanes
        self._waiting: list[_Entry] = []
        self._sequence = itertools.count()
        # Told of each job as it starts: (engine, seconds it waited, seconds past its deadline).
        self._observers: list[Callable[[str, float, float], None]] = []
        self.yield_ahead_s: float | None = None  # None: jobs never yield to the LLM
        self._llm_waits: list[float] = []  # since when each reply waiting for its first clause needs it
        self._recheck_at: float | None = None  # when a held job's deadline comes close enough
        self._recheck_loop: asyncio.AbstractEventLoop | None = None  # the loop that will look again then
        self._giving_way: list[Callable[[], None]] = []  # how to stop each running job that gives way
        self._foreground_started = 0

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def waiting(self) -> int:
        """Jobs waiting for a lane (abandoned ones included until a release skips them)."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """No engine job runs or waits (jobs that give way aside), and no reply waits for its first
        clause from the LLM: work started now delays nobody's."""
        with self._lock:
            waiting = any(not (entry.waiter.gone or entry.waiter.gives_way) for entry in self._waiting)
            busy = self._lanes - self._free - len(self._giving_way)
            return busy == 0 and not waiting and not self._llm_waits

    def running_gives_way(self, stop: Callable[[], None]) -> Callable[[], None]:
        """A job that gives way has its lane: ``stop`` cancels it when someone else needs the CPU.
        Returns the function to call (before the lane is released) once it has ended."""
        with self._lock:
            self._giving_way.append(stop)

        def ended() -> None:
            with self._lock:
                if stop in self._giving_way:
                    self._giving_way.remove(stop)

        return ended

    def _make_way(self) -> list[Callable[[], None]]:
        """Under the lock: the stops of the running jobs that give way (call them unlocked)."""
        stops, self._giving_way = self._giving_way, []
        return stops

    def resize(self, lanes: int) -> None:
        """Change the number of lanes; jobs running now keep theirs."""
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        with self._lock:
            self._free += lanes - self._lanes
            self._lanes = lanes
            grants = self._grant_free_lanes()
        for grant in grants:
            grant()

    async def acquire(self, deadline: float) -> None:
        """Wait for a lane; the caller must :meth:`release` it once its job has ended."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiting and not self._yields(deadline, time.monotonic()):
                self._free -= 1
                return
            waiter = _Waiter(loop, loop.create_future(), gives_way=gives_way())
            heapq.heappush(self._waiting, _Entry(deadline, next(self._sequence), waiter))
            grants = self._grant_free_lanes()  # a free lane, held back for the LLM: look again later
            stops = [] if gives_way() else self._make_way()
        for stop in stops:
            stop()
        for grant in grants:
            grant()
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                waiter.abandoned = True
                granted = waiter.granted
            if granted:  # the lane arrived as we were cancelled: pass it on
                self.release()
            raise

    def waiting_on_llm(self, needed_since: float | None = None) -> Callable[[], None]:
        """A reply now waits for its first clause from the LLM, needed since ``needed_since``
        (monotonic; default now); returns the function that says it no longer does (idempotent:
        call it at the first clause and again when the reply ends)."""
        needed = time.monotonic() if needed_since is None else needed_since
        with self._lock:
            self._llm_waits.append(needed)
            stops = self._make_way()
        for stop in stops:
            stop()
        ended = False

        def end() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            with self._lock:
                self._llm_waits.remove(needed)
                grants = self._grant_free_lanes()
            for grant in grants:
                grant()

        return end

    def observe(self, observer: Callable[[str, float, float], None]) -> Callable[[], None]:
        """Tell ``observer`` (engine, seconds waited, seconds past the deadline) of every job
        as it starts, from any thread. Returns the function that stops it."""
        with self._lock:
            self._observers.append(observer)

        def stop() -> None:
            with self._lock:
                if observer in self._observers:
                    self._observers.remove(observer)

        return stop

    @property
    def foreground_jobs_started(self) -> int:
        """Jobs started since the process began, background ones (:data:`BACKGROUND_AHEAD_S`)
        aside: a count that only grows, so a change says someone's work ran meanwhile."""
        return self._foreground_started

    def started(self, engine: str, submitted: float, deadline: float) -> None:
        """A job that waited since ``submitted`` (monotonic) got its lane: tell the observers."""
        now = time.monotonic()
        if deadline - submitted < BACKGROUND_AHEAD_S:
            with self._lock:
                self._foreground_started += 1
        for observer in list(self._observers):
            observer(engine, now - submitted, now - deadline)

    def release(self) -> bool:
        """Give the lane to the most urgent waiting job, or free it; True when no job runs or waits now."""
        with self._lock:
            self._free += 1
            grants = self._grant_free_lanes()
            idle = self._free == self._lanes and not self._waiting
        for grant in grants:
            grant()
        return idle

    def _yields(self, deadline: float, now: float) -> bool:
        """Under the lock: whether a job needed by ``deadline`` waits for the LLM's first clauses."""
        return self._needed_far_ahead(deadline, now) or self._due_after_an_llm_wait(deadline, now) is not None

    def _needed_far_ahead(self, deadline: float, now: float) -> bool:
        """Under the lock: a reply waits for the LLM and this job is needed more than
        ``yield_ahead_s`` from now (true of every job needed later too)."""
        return bool(self._llm_waits) and self.yield_ahead_s is not None and deadline - now > self.yield_ahead_s

    def _due_after_an_llm_wait(self, deadline: float, now: float) -> float | None:
        """Under the lock: for a job that is due (its deadline now or past) and was needed after a
        reply began to wait for the LLM, since when that reply needs its first clause (the most
        urgent one, among those that have waited less than ``yield_ahead_s``); else None. A job
        not due yet (a later clause, audio still playing before it) is not held back: it would
        leave a gap in the middle of that reply."""
        if not self._llm_waits or self.yield_ahead_s is None or deadline > now:
            return None
        limit = self.yield_ahead_s
        holding = min((needed for needed in self._llm_waits if now - needed < limit), default=None)
        return holding if holding is not None and deadline > holding else None

    def _grant_free_lanes(self) -> list[Callable[[], None]]:
        """Under the lock: hand free lanes to waiters, earliest deadline first, passing over those
        that wait for the LLM; returns what tells them (call unlocked)."""
        grants: list[Callable[[], None]] = []
        now = time.monotonic()
        ahead = self.yield_ahead_s or 0.0
        held: list[_Entry] = []
        look_again_at = float("inf")  # when the first held job may go without any first clause coming
        while self._free > 0 and self._waiting:
            entry = heapq.heappop(self._waiting)
            waiter = entry.waiter
            if waiter.gone:
                continue
            if self._needed_far_ahead(entry.deadline, now):
                held.append(entry)
                look_again_at = min(look_again_at, entry.deadline - ahead)
                break  # every job after it is needed further ahead still
            holding = self._due_after_an_llm_wait(entry.deadline, now)
            if holding is not None:
                held.append(entry)
                look_again_at = min(look_again_at, holding + ahead)  # that reply lets go then
                continue  # a job needed later but not due yet may still go
            waiter.granted = True
            self._free -= 1
            grants.append(functools.partial(_tell, waiter, self))
        for entry in held:
            heapq.heappush(self._waiting, entry)
        if held:
            self._recheck_later(look_again_at, held[0].waiter.loop)
        return grants

    def _recheck_later(self, at: float, loop: asyncio.AbstractEventLoop) -> None:
        """Under the lock: look again at ``at`` (monotonic)."""
        pending = self._recheck_loop is not None and not self._recheck_loop.is_closed()
        if pending and self._recheck_at is not None and self._recheck_at <= at:
            return  # a look at or before then is already due (on a loop still open to make it)
        delay = max(0.0, at - time.monotonic())
        try:
            loop.call_soon_threadsafe(loop.call_later, delay, self._recheck)
        except RuntimeError:  # its loop closed: the job is gone with it
            return
        self._recheck_at, self._recheck_loop = at, loop

    def _recheck(self) -> None:
        with self._lock:
            self._recheck_at = self._recheck_loop = None
            grants = self._grant_free_lanes()
        for grant in grants:
            grant()


def _tell(waiter: _Waiter, scheduler: DeadlineScheduler) -> None:
    try:
        waiter.loop.call_soon_threadsafe(waiter.grant)
    except RuntimeError:  # its loop closed after all: the lane goes to the next one
        scheduler.release()


_process_scheduler = DeadlineScheduler()


def cpu_scheduler() -> DeadlineScheduler:
    """The scheduler every engine of this process shares (see ``engines.lanes``)."""
    return _process_scheduler
