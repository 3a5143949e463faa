"""Bi-streaming synthesis: engines that take the LLM's text as it is generated.

A :class:`TextStreamSynthesizer` starts speaking before the sentence is complete: it
reads text deltas from an async iterator while it synthesizes, instead of one finished
clause at a time. The speak path (pipeline/speak.py) uses it when the engine's ``info.streams_text`` says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from cosyagent.engines.base import AudioF32, CancelToken


@runtime_checkable
class TextStreamSynthesizer(Protocol):
    name: str
    sample_rate: int

    def synthesize_stream(
        self,
        text: AsyncIterator[str],
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
    ) -> AsyncIterator[AudioF32]:
        """Yield float32 chunks while ``text`` is still being produced; stop within one chunk on cancel."""
        ...
