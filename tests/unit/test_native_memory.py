"""The engines give freed native memory back: the scheduler says when every engine is idle,
the executor then trims glibc's heap on its worker thread, once per burst of jobs."""

from __future__ import annotations

import asyncio
import platform
import threading
import time

import onnxruntime as ort
import pytest

from cosyagent.engines import base
from cosyagent.engines.base import EngineExecutor
from cosyagent.engines.native_memory import can_trim, lean_onnx_options, trim_native_heap
from cosyagent.engines.scheduling import DeadlineScheduler

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


async def test_release_says_idle_only_when_no_job_runs_or_waits() -> None:
    scheduler = DeadlineScheduler(lanes=2)
    await scheduler.acquire(time.monotonic())
    await scheduler.acquire(time.monotonic())
    assert scheduler.release() is False, "one job still runs"
    assert scheduler.release() is True

    scheduler = DeadlineScheduler(lanes=1)
    await scheduler.acquire(time.monotonic())
    waiter = asyncio.create_task(scheduler.acquire(time.monotonic()))
    await asyncio.sleep(0.01)
    assert scheduler.release() is False, "the lane went to the waiting job"
    await asyncio.wait_for(waiter, 1.0)
    assert scheduler.release() is True


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_calls_glibc() -> None:
    assert can_trim()
    assert trim_native_heap() is True


def test_lean_options_turn_off_the_onnxruntime_arena_and_patterns() -> None:
    options = lean_onnx_options(ort.SessionOptions())
    assert (options.enable_cpu_mem_arena, options.enable_mem_pattern) == (False, False)


async def test_the_executor_trims_once_after_the_last_job_of_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[str] = []
    trimmed = threading.Event()

    def recording_trim() -> bool:
        trims.append(threading.current_thread().name)
        trimmed.set()
        return trim_native_heap()

    monkeypatch.setattr(base, "trim_native_heap", recording_trim)
    executor = EngineExecutor("asr", DeadlineScheduler(lanes=1))
    try:
        results = await asyncio.gather(*(executor.run(lambda n=n: time.sleep(0.05) or n) for n in range(3)))
        assert results == [0, 1, 2]
        assert await asyncio.to_thread(trimmed.wait, 2.0)
        trimmed.clear()
        await executor.run(lambda: None)  # queued behind that trim on the same thread
        assert await asyncio.to_thread(trimmed.wait, 2.0)
    finally:
        executor.shutdown()
    assert len(trims) == 2, "one trim after the burst of three (each handed its lane on), one after the single job"
    assert all(name.startswith("engine-asr") for name in trims), "never on the event loop's thread"
