"""``cosyagent serve`` with a timeline of every engine job and turn event in its log.

    .venv/bin/python -m benchmarks.engine_timeline serve --port 8401 [--config FILE]
    cosyagent bench --url http://127.0.0.1:8401/v1 --sessions 1 --targets websocket --clips questions

Each log line ``timeline: ...`` carries milliseconds since the server started (one monotonic
clock): when an engine job was submitted, got its CPU lane, and ended; when the turn detector
paused, stopped; when a transcript or a Smart Turn verdict came back. The llama.cpp server's own
log (prompt tokens evaluated, ms per token) is shown too. This is how the order of the jobs on
the lane was found (docs/benchmarks.md, "Which job takes the lane first"); it wraps the
server's classes from outside and changes nothing else.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cosyagent.agent.events import Action
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.engines.base import CancelToken, EngineExecutor
from cosyagent.pipeline.turns import TurnEvent

T = TypeVar("T")
_STARTED = time.monotonic()
logger = logging.getLogger("timeline")


def _ms() -> float:
    return (time.monotonic() - _STARTED) * 1000


def _install() -> None:
    run = EngineExecutor.run

    async def timed_run(self: EngineExecutor, fn: Callable[[], T], cancel: CancelToken | None = None) -> T:
        submitted = _ms()

        def timed() -> T:
            began = _ms()
            try:
                return fn()
            finally:
                ended = _ms()
                logger.info(
                    "job %s submitted %.0f ran %.0f-%.0f (%.0f ms)", self._name, submitted, began, ended, ended - began
                )

        return await run(self, timed, cancel)

    on_turn_event = RealtimeCore._on_turn_event

    def logged_turn_event(self: RealtimeCore, turn: TurnEvent) -> list[Action]:
        logger.info("turn %s at %.0f", type(turn).__name__, _ms())
        return on_turn_event(self, turn)

    transcription_done = RealtimeCore.transcription_done

    def logged_transcript(self: RealtimeCore, job_id: str, text: str, duration_s: float) -> list[Action]:
        logger.info("transcript %s at %.0f: %r", job_id[-6:], _ms(), text)
        return transcription_done(self, job_id, text, duration_s)

    turn_end_predicted = RealtimeCore.turn_end_predicted

    def logged_verdict(self: RealtimeCore, job_id: str, probability: float) -> list[Action]:
        logger.info("verdict %s at %.0f: p=%.2f", job_id[-6:], _ms(), probability)
        return turn_end_predicted(self, job_id, probability)

    patches: dict[str, Any] = {
        "_on_turn_event": logged_turn_event,
        "transcription_done": logged_transcript,
        "turn_end_predicted": logged_verdict,
    }
    EngineExecutor.run = timed_run  # type: ignore[method-assign]
    for name, patched in patches.items():
        setattr(RealtimeCore, name, patched)
    logging.getLogger("cosyagent.engines.llama_process").setLevel(logging.DEBUG)  # its per-request timings
    logging.getLogger("cosyagent.pipeline.speak").setLevel(logging.DEBUG)  # clauses cut short as the audio ran dry


def main() -> int:
    from cosyagent.cli import main as cosyagent_main

    _install()
    return cosyagent_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
