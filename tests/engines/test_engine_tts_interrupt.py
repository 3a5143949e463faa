"""A barge-in must stop Kokoro *inside* a clause: one long sentence is one ONNX run."""

from __future__ import annotations

import asyncio
import time

import pytest

from cosyagent.engines.base import CancelToken
from cosyagent.engines.kokoro_tts import KokoroTTS

LONG_SENTENCE = (
    "This single sentence is deliberately long, running on and on without a full stop so that the "
    "synthesizer has to make all of it in one piece, which takes a couple of seconds on two cores"
)


@pytest.fixture(scope="module")
def tts() -> KokoroTTS:
    engine = KokoroTTS()
    engine.load()
    return engine


async def test_cancel_aborts_a_clause_mid_inference(tts: KokoroTTS) -> None:
    began = time.monotonic()
    chunks = [c async for c in tts.synthesize(LONG_SENTENCE, voice="jf_alpha")]
    full_s = time.monotonic() - began
    assert len(chunks) == 1  # one piece, one ONNX run: the case that used to be uncancellable

    cancel = CancelToken()
    stream = tts.synthesize(LONG_SENTENCE, voice="jf_alpha", cancel=cancel)
    consumer = asyncio.create_task(anext(stream, None))
    await asyncio.sleep(0.3)
    cancelled_at = time.monotonic()
    cancel.cancel()
    assert await consumer is None  # nothing comes out of a cancelled clause
    while tts.queue_depth:
        await asyncio.sleep(0.01)
    stopped_after_s = time.monotonic() - cancelled_at
    assert stopped_after_s < max(0.25, full_s / 3), (stopped_after_s, full_s)
    # The engine is healthy afterwards.
    assert [c async for c in tts.synthesize("Still here.", voice="jf_alpha")]
