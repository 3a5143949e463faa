"""How fast this machine is right now: a fixed piece of the product's own CPU work, timed.

The 2-core machines the benchmarks run on are shared virtual machines whose speed moves from day
to day and within a day: on one AMD EPYC, Moonshine took 2960 ms over the same 29 utterances at
08:15, 4123 ms at 11:04 and 2976 at 11:50 on 2026-12-06, by more than most of the changes
measured that week moved four sessions' latencies. ``cosyagent bench`` runs this first, in a
process of its own before any server starts, and records it beside its results
(``machine.speed``): compare runs at like speeds, or say that the speed differed.

    python -m benchmarks.machine_speed      # prints the JSON

The work: Moonshine base-en (the default recognizer, 2 threads, loaded and warmed up first)
transcribing the bench's own utterances (``--clips utterances``: 1–8 s cut from two real
recordings), best of two passes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.records import utterances
from cosyagent.audio.pcm import resample
from cosyagent.engines.moonshine_asr import MoonshineASR
from cosyagent.talk import RATE

ROOT = Path(__file__).resolve().parents[1]
PASSES = 2

logger = logging.getLogger(__name__)


async def measure(passes: int = PASSES) -> dict[str, Any]:
    """Moonshine over the bench's utterances, ``passes`` times; the fastest pass (blocking work
    runs on the engine's own thread)."""
    asr = MoonshineASR(cpu_threads=2)
    audio = [resample(clip.samples, RATE, asr.sample_rate) for clip in utterances()]
    asr.load()
    try:
        best = float("inf")
        for _ in range(passes):
            started = time.perf_counter()
            for samples in audio:
                await asr.transcribe(samples)
            best = min(best, time.perf_counter() - started)
    finally:
        asr.close()
    seconds = sum(samples.size for samples in audio) / asr.sample_rate
    return {
        "work": f"Moonshine base-en, 2 threads, {len(audio)} utterances ({seconds:.0f} s of speech), best of {passes}",
        "moonshine_ms": round(best * 1000),
    }


def measure_apart(timeout_s: float = 300.0) -> dict[str, Any] | None:
    """:func:`measure` in a process of its own (the caller keeps none of Moonshine's memory or
    threads). None, with a warning, if it fails: a benchmark still runs without it."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.machine_speed"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        logger.warning("the machine's speed was not measured: the reference took over %g s", timeout_s)
        return None
    if done.returncode != 0:
        logger.warning("the machine's speed was not measured: %s", done.stderr.strip()[-500:])
        return None
    try:
        speed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        logger.warning("the machine's speed was not measured: the reference printed %r", done.stdout[-200:])
        return None
    return speed


def main() -> None:
    print(json.dumps(asyncio.run(measure())))


if __name__ == "__main__":
    main()
