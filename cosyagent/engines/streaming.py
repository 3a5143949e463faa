"""Bi-streaming synthesis: engines that take the LLM's text as it is generated.

A :class:`TextStreamSynthesizer` starts speaking before the sentence is complete: it
reads text deltas from an async iterator while it synthesizes, instead of one finished
clause at a time. The reply pipeline uses it when the engine (or its wrapper) says so.
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


def streams_text(tts: object) -> bool:
    """Whether ``tts`` takes streaming text input (a wrapper can say so with ``streams_text = True``)."""
    flag = getattr(tts, "streams_text", None)
    if flag is not None:
        return bool(flag)
    return isinstance(tts, TextStreamSynthesizer)
