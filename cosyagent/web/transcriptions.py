"""``POST /v1/audio/transcriptions``: OpenAI's speech-to-text route on the shared ASR engine.

Any container PyAV reads (wav, mp3, ogg/opus, flac, webm, m4a...), at any rate and channel
count, is decoded to 16 kHz mono. Formats: json, text, verbose_json (segment timestamps;
Whisper's per-segment scores are not exposed by the engine), srt, vtt. Word timestamps and
log probabilities no engine here gives: asking for them is a 400, not an answer without them.
``stream=true`` answers with server-sent ``transcript.text.delta`` events, one per
segment, and a final ``transcript.text.done``; audio longer than one Whisper window is
cut at its quietest moments and transcribed window by window, so deltas arrive while the
rest is still being decoded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from cosyagent.audio.containers import DecodedAudio, decode_audio
from cosyagent.audio.pauses import split_at_pauses as cut_at_pauses
from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    EngineCancelled,
    EngineError,
    SpeechRecognizer,
    Transcript,
    TranscriptSegment,
)
from cosyagent.engines.text_scripts import LANGUAGE_NAMES, language_list
from cosyagent.runtime import Runtime
from cosyagent.web.errors import ApiError, error_event_body

logger = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
WINDOW_S = 28.0  # under Whisper's 30 s window


def transcriptions_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/audio/transcriptions")
    async def create_transcription(
        file: Annotated[UploadFile, File(description="the audio: wav, mp3, ogg/opus, flac, webm, m4a...")],
        model: Annotated[str, Form()] = "whisper-1",
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float | None, Form()] = None,
        stream: Annotated[bool, Form()] = False,
        # The SDK sends lists as repeated "name[]" fields (curl: -F "timestamp_granularities[]=word");
        # a form with the plain name is read too.
        granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
        granularities_plain: Annotated[list[str] | None, Form(alias="timestamp_granularities")] = None,
        include: Annotated[list[str] | None, Form(alias="include[]")] = None,
        include_plain: Annotated[list[str] | None, Form(alias="include")] = None,
    ) -> Response:
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format {response_format!r} is not supported; use one of {list(RESPONSE_FORMATS)}",
                param="response_format",
                code="unsupported_format",
            )
        _check_language(language, runtime.asr)
        _check_granularities([*(granularities or ()), *(granularities_plain or ())], response_format, runtime.asr)
        _check_include([*(include or ()), *(include_plain or ())], runtime.asr)
        audio = await _decode(await file.read(), runtime)
        if stream:
            events = _stream_events(runtime.asr, audio.samples, language, prompt)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        started = time.monotonic()
        transcript = await runtime.asr.transcribe(audio.samples, language=language, prompt=prompt)
        logger.info(
            "transcribed %.1f s of %s/%s audio in %.2f s",
            audio.duration_s,
            audio.container,
            audio.codec,
            time.monotonic() - started,
        )
        return render(transcript, response_format)

    return router


def _check_language(language: str | None, asr: SpeechRecognizer) -> None:
    if language is None:
        return
    base = language.strip().lower().replace("_", "-").split("-")[0]
    if base not in asr.info.languages:
        raise ApiError(
            400,
            f"language {language!r} is not supported by the {asr.info.name} engine; "
            f"it transcribes {language_list(asr.info.languages)} only",
            param="language",
            code="unsupported_language",
        )


def _check_granularities(granularities: list[str], response_format: str, asr: SpeechRecognizer) -> None:
    """``timestamp_granularities[]``: segment timestamps are what ``verbose_json`` carries; word
    timestamps are refused rather than answered without (a subtitle tool would get no words)."""
    unknown = [g for g in granularities if g not in ("segment", "word")]
    if unknown:
        raise ApiError(
            400,
            f"timestamp_granularities {unknown[0]!r} is not one of 'segment', 'word'",
            param="timestamp_granularities",
            code="invalid_value",
        )
    if granularities and response_format != "verbose_json":
        raise ApiError(
            400,
            f"timestamp_granularities needs response_format 'verbose_json', not {response_format!r}",
            param="timestamp_granularities",
            code="invalid_value",
        )
    if "word" in granularities:
        raise ApiError(
            400,
            f"word timestamps are not available: the {asr.info.model} recognizer gives segment timestamps only",
            param="timestamp_granularities",
            code="unsupported_parameter",
        )


def _check_include(include: list[str], asr: SpeechRecognizer) -> None:
    """``include[]``: ``logprobs`` is OpenAI's one value, and no engine here exposes them."""
    if not include:
        return
    if include[0] != "logprobs":
        raise ApiError(400, f"include {include[0]!r} is not one of 'logprobs'", param="include", code="invalid_value")
    raise ApiError(
        400,
        f"logprobs are not available: the {asr.info.model} recognizer does not expose its token probabilities",
        param="include",
        code="unsupported_parameter",
    )


async def _decode(data: bytes, runtime: Runtime) -> DecodedAudio:
    limit = runtime.config.limits.max_transcription_seconds
    return await asyncio.to_thread(decode_audio, data, sample_rate=runtime.asr.sample_rate, max_seconds=limit)


# --- responses ------------------------------------------------------------------------------


def render(transcript: Transcript, response_format: str) -> Response:
    usage = {"type": "duration", "seconds": round(transcript.duration_s, 3)}
    if response_format == "text":
        return PlainTextResponse(transcript.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript.segments))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript.segments), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(
            {
                "task": "transcribe",
                "language": LANGUAGE_NAMES.get(transcript.language, transcript.language).lower(),  # "english"
                "duration": round(transcript.duration_s, 3),
                "text": transcript.text,
                "segments": [_segment_json(i, s) for i, s in enumerate(transcript.segments)],
                "usage": usage,
            }
        )
    return JSONResponse({"text": transcript.text, "usage": usage})


def _segment_json(index: int, segment: TranscriptSegment) -> dict[str, Any]:
    return {
        "id": index,
        "seek": int(segment.start_s * 100),
        "start": round(segment.start_s, 3),
        "end": round(segment.end_s, 3),
        "text": segment.text,
        "tokens": [],
        "temperature": 0.0,
        # the engine does not report these scores
        "avg_logprob": None,
        "compression_ratio": None,
        "no_speech_prob": None,
    }


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: Sequence[TranscriptSegment]) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start_s, ',')} --> {_timestamp(s.end_s, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate((s for s in segments if s.text.strip()), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Sequence[TranscriptSegment]) -> str:
    cues = [
        f"{_timestamp(s.start_s, '.')} --> {_timestamp(s.end_s, '.')}\n{s.text.strip()}\n"
        for s in segments
        if s.text.strip()
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


# --- streaming ------------------------------------------------------------------------------


def split_at_pauses(audio: AudioF32, rate: int, window_s: float = WINDOW_S) -> list[tuple[int, int]]:
    """Spans of at most one Whisper window, cut in pauses (:func:`cosyagent.audio.pauses.split_at_pauses`)."""
    return cut_at_pauses(audio, rate, window_s)


async def _stream_events(
    asr: SpeechRecognizer, audio: AudioF32, language: str | None, prompt: str | None
) -> AsyncIterator[str]:
    """SSE events. Cancel-safe: a client that leaves stops the decoding between segments."""
    cancel = CancelToken()
    texts: list[str] = []
    try:
        for start, end in split_at_pauses(audio, asr.sample_rate):
            piece = await asr.transcribe(audio[start:end], language=language, prompt=prompt, cancel=cancel)
            for segment in piece.segments:
                if segment.text.strip():
                    texts.append(segment.text)
                    yield _event({"type": "transcript.text.delta", "delta": segment.text})
    except EngineCancelled:
        return
    except EngineError as exc:
        yield _event({"type": "error", **error_event_body(exc)})
        return
    finally:
        cancel.cancel()
    usage = {"type": "duration", "seconds": round(audio.size / asr.sample_rate, 3)}
    yield _event({"type": "transcript.text.done", "text": "".join(texts).strip(), "usage": usage})


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"
