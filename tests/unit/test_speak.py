"""How /v1/audio/speech feeds an engine: clause by clause, or the whole text to a bi-streaming engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from cosyagent.engines.base import AudioF32, CancelToken
from cosyagent.web.speech import _clauses, _synthesize

TEXT = "Good morning, and welcome to the station. The next train leaves from platform four in ten minutes."


class ClauseEngine:
    name = "clauses"
    sample_rate = 24_000

    def __init__(self) -> None:
        self.calls: list[str] = []

    def load(self) -> None: ...

    def voices(self) -> list[str]:
        return ["v"]

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        self.calls.append(text)
        yield np.zeros(len(text), dtype=np.float32)

    def close(self) -> None: ...


class StreamingEngine(ClauseEngine):
    streams_text = True

    async def synthesize_stream(
        self, text: AsyncIterator[str], *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        pieces = [piece async for piece in text]
        self.calls.append("|".join(pieces))
        for piece in pieces:
            yield np.zeros(len(piece), dtype=np.float32)


def test_the_first_clause_is_short() -> None:
    assert _clauses(TEXT) == [
        "Good morning,",
        "and welcome to the station.",
        "The next train leaves from platform four in ten minutes.",
    ]
    assert _clauses("Yes") == ["Yes"]


async def test_a_clause_engine_gets_one_call_per_clause() -> None:
    engine = ClauseEngine()
    chunks = [c async for c in _synthesize(engine, TEXT, "v", 1.0, CancelToken())]
    assert engine.calls == _clauses(TEXT) and len(chunks) == 3


async def test_a_bi_streaming_engine_gets_the_whole_text() -> None:
    engine = StreamingEngine()
    chunks = [c async for c in _synthesize(engine, TEXT, "v", 1.0, CancelToken())]
    assert engine.calls == [TEXT] and sum(c.size for c in chunks) == len(TEXT)
