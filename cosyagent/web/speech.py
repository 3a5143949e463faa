"""``POST /v1/audio/speech``: OpenAI's text-to-speech route, streamed as it is synthesized.

The text is spoken as the agent's replies are (:func:`cosyagent.pipeline.speak.speak`:
clause by clause, the first one short, or the whole input to an engine that takes
streaming text), in any voice of the library, and each chunk is encoded and sent as soon
as it exists: the first bytes leave after the first clause, whatever the length of the input.
WAV is streamed with "unknown length" sizes, as streaming players expect;
``stream_format: "sse"`` sends ``speech.audio.delta`` / ``speech.audio.done`` events
whose base64 pieces concatenate to the same file; with ``timestamps: ["word", "viseme"]``
(either or both; engines that time their words) a ``speech.audio.timestamps`` event goes
before the deltas of the audio it describes. Everything that can be refused is
checked, and the first chunk made, before the response starts: errors get a real status.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from cosyagent.audio.containers import SPEECH_FORMATS, StreamEncoder, available_speech_formats, new_encoder
from cosyagent.engines.base import AudioF32, CancelToken, EngineError
from cosyagent.engines.text_scripts import LANGUAGE_NAMES, language_list, unspeakable_language
from cosyagent.engines.timings import can_time_words
from cosyagent.pipeline.speak import SpokenChunk, speak
from cosyagent.pipeline.timestamps import InvalidTimestampKinds, MarkQueue, TimestampKind, parse_kinds, payload
from cosyagent.runtime import Runtime
from cosyagent.web.errors import ApiError, error_event_body

logger = logging.getLogger(__name__)

MAX_INSTRUCTIONS_CHARS = 4096


class VoiceRef(BaseModel):
    id: str


class SpeechRequest(BaseModel):
    """OpenAI's schema. ``voice``: a built-in voice, a user voice id or name, or ``{"id": ...}``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # any name: the server has one TTS engine (its id: runtime.tts.info.model)
    input: str
    voice: str | VoiceRef | None = None  # None: the server's default voice
    instructions: str | None = None  # CosyVoice3 follows them; Piper and Kokoro cannot
    response_format: str = "mp3"
    speed: float = 1.0
    stream_format: str = "audio"
    timestamps: Any = None  # ours: ["word", "viseme"] (either or both) adds speech.audio.timestamps events (sse)


def speech_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/audio/speech", response_class=StreamingResponse)
    async def create_speech(request: SpeechRequest) -> StreamingResponse:
        text, voice = _validate(request, runtime)
        kinds = _timestamp_kinds(request, runtime)
        marks = MarkQueue(kinds, runtime.tts.sample_rate) if kinds else None
        if request.instructions and not runtime.tts.info.follows_instructions:
            logger.debug("speech instructions ignored: the %s engine cannot follow them", runtime.tts.info.name)
        cancel = CancelToken()
        started = time.monotonic()
        tts = runtime.speech.with_instructions(request.instructions)
        spoken = speak(tts, text, voice=voice, speed=request.speed, cancel=cancel, timed=bool(kinds))
        chunks = _samples(spoken, marks)
        first = await _first_chunk(chunks, cancel)
        stats = _Stats(started, time.monotonic() - started, len(text), request.response_format, runtime.tts.sample_rate)
        audio = _encoded(first, chunks, cancel, request.response_format, stats)
        if request.stream_format == "sse":
            return StreamingResponse(_sse(audio, marks), media_type="text/event-stream", headers=_NO_BUFFERING)
        media_type = SPEECH_FORMATS[request.response_format].media_type
        return StreamingResponse(audio, media_type=media_type, headers=_NO_BUFFERING)

    return router


_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _validate(request: SpeechRequest, runtime: Runtime) -> tuple[str, str]:
    text = request.input.strip()
    if not text:
        raise ApiError(400, "input is empty: give the text to speak", param="input", code="empty_input")
    limit = runtime.config.limits.max_speech_input_chars
    if len(request.input) > limit:
        raise ApiError(
            400, f"input is {len(request.input)} characters; the limit is {limit}", param="input", code="input_too_long"
        )
    _refuse_unspeakable(text, runtime)
    if request.instructions is not None and len(request.instructions) > MAX_INSTRUCTIONS_CHARS:
        raise ApiError(
            400,
            f"instructions are limited to {MAX_INSTRUCTIONS_CHARS} characters",
            param="instructions",
            code="invalid_value",
        )
    formats = available_speech_formats()
    if request.response_format not in formats:
        raise ApiError(
            400,
            f"response_format {request.response_format!r} is not supported; use one of {list(formats)}",
            param="response_format",
            code="unsupported_format",
        )
    if request.stream_format not in ("audio", "sse"):
        raise ApiError(400, "stream_format must be 'audio' or 'sse'", param="stream_format", code="invalid_value")
    low, high = runtime.tts.info.speed_range or (0.25, 4.0)  # OpenAI's range, for an engine without its own
    if not low <= request.speed <= high:
        raise ApiError(
            400,
            f"speed {request.speed:g} is outside the {low:g}-{high:g} range of the {runtime.tts.info.name} engine",
            param="speed",
            code="invalid_value",
        )
    voice = request.voice.id if isinstance(request.voice, VoiceRef) else request.voice
    return text, voice or runtime.config.realtime.voice


def _refuse_unspeakable(text: str, runtime: Runtime) -> None:
    """Text in a script the voice cannot read is refused as a whole, before any audio: found only
    at a later clause, it would break a stream already answered 200."""
    languages = runtime.speech.info.languages
    if (language := unspeakable_language(text, languages)) is not None:
        raise ApiError(
            400,
            f"input has {LANGUAGE_NAMES[language]} text; "
            f"the {runtime.tts.info.name} engine speaks {language_list(languages)} only",
            param="input",
            code="unsupported_language",
        )


def _timestamp_kinds(request: SpeechRequest, runtime: Runtime) -> tuple[TimestampKind, ...]:
    if request.timestamps is None:
        return ()
    try:
        kinds = parse_kinds(request.timestamps)
    except InvalidTimestampKinds as exc:
        raise ApiError(400, str(exc), param="timestamps" + exc.where, code="invalid_value") from exc
    if kinds and request.stream_format != "sse":
        raise ApiError(
            400, "timestamps need stream_format 'sse' (they are events)", param="timestamps", code="invalid_value"
        )
    if kinds and not can_time_words(runtime.tts):
        raise ApiError(
            400,
            f"the {runtime.tts.info.name} engine cannot time its words; ask without timestamps",
            param="timestamps",
            code="timestamps_unavailable",
        )
    return kinds


async def _samples(spoken: AsyncIterator[SpokenChunk], marks: MarkQueue | None) -> AsyncIterator[AudioF32]:
    """The audio alone (a chunk that only carries text has none); its timings go to ``marks``."""
    async with aclosing(spoken):  # type: ignore[type-var]  # speak is an async generator
        async for chunk in spoken:
            if chunk.samples.size:
                if marks is not None:
                    marks.add(chunk.samples.size, chunk.timings)
                yield chunk.samples


async def _first_chunk(chunks: AsyncIterator[AudioF32], cancel: CancelToken) -> AudioF32:
    """Make the first chunk before answering, so that a refusal (an unknown voice, an engine
    that cannot serve...) still gets its status code."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        raise ApiError(
            400, "input has nothing to speak (no letters or digits)", param="input", code="empty_input"
        ) from None
    except BaseException:  # cancelled while waiting: stop the synthesis too
        cancel.cancel()
        await chunks.aclose()  # type: ignore[attr-defined]
        raise


class _Stats:
    def __init__(self, started: float, first_s: float, chars: int, fmt: str, rate: int) -> None:
        self.started, self.first_s, self.chars, self.format, self.rate = started, first_s, chars, fmt, rate
        self.samples = 0

    def log(self, outcome: str) -> None:
        elapsed = time.monotonic() - self.started
        audio_s = self.samples / self.rate
        logger.info(
            "speech %s: %d chars, %s, first audio %.0f ms, %.2f s of audio in %.2f s (RTF %.2f)",
            outcome,
            self.chars,
            self.format,
            self.first_s * 1000,
            audio_s,
            elapsed,
            elapsed / audio_s if audio_s else 0.0,
        )


async def _encoded(
    first: AudioF32, rest: AsyncIterator[AudioF32], cancel: CancelToken, fmt: str, stats: _Stats
) -> AsyncIterator[bytes]:
    """The container bytes of the whole speech, chunk by chunk. Cancel-safe: stops the synthesis.

    Encoding (mp3: ~15 ms per second of audio) runs off the event loop; an encoder is closed
    only once no worker thread is using it any more.
    """
    outcome = "aborted"
    loop = asyncio.get_running_loop()
    encoder = new_encoder(fmt, stats.rate)
    job: asyncio.Future[bytes] | None = None

    async def off_loop(step: Callable[..., bytes], *args: Any) -> bytes:
        nonlocal job
        job = loop.run_in_executor(None, step, *args)
        return await asyncio.shield(job)

    try:
        stats.samples += first.size
        yield await off_loop(encoder.encode, first)  # a WAV header and the first audio: the client can start
        async for chunk in rest:
            stats.samples += chunk.size
            if data := await off_loop(encoder.encode, chunk):
                yield data
        if tail := await off_loop(encoder.finish):
            yield tail
        outcome = "done"
    except EngineError:
        outcome = "failed"
        raise
    finally:
        cancel.cancel()
        if job is not None and not job.done():
            job.add_done_callback(lambda done: _close_after(done, encoder))
        else:
            encoder.close()
        await rest.aclose()  # type: ignore[attr-defined]
        stats.log(outcome)


def _close_after(job: asyncio.Future[bytes], encoder: StreamEncoder) -> None:
    if not job.cancelled():
        job.exception()  # retrieved, so that asyncio does not warn: nobody needs the result any more
    encoder.close()


async def _sse(audio: AsyncIterator[bytes], marks: MarkQueue | None) -> AsyncIterator[str]:
    """Audio deltas; with ``marks``, the timings of each chunk just before its first delta."""
    try:
        async for data in audio:
            if marks is not None and (batch := marks.rest()):
                yield _event({"type": "speech.audio.timestamps", **payload(batch)})
            if data:
                yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
    except EngineError as exc:
        yield _event({"type": "error", **error_event_body(exc)})
        return
    finally:
        await audio.aclose()  # type: ignore[attr-defined]
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}  # no tokens: nothing is billed
    yield _event({"type": "speech.audio.done", "usage": usage})


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
