"""The voice library over HTTP: ``/v1/voices`` (and ``/v1/audio/voices``, OpenAI's path), ``/v1/speakers``.

``POST /v1/voices`` takes either multipart (``file`` — or ``audio``/``audio_sample`` — plus
``name`` and optional ``text``; without text the clip is transcribed) for a cloned voice,
or JSON ``{"name": ..., "blend": {"af_heart": 0.7, "am_adam": 0.3}}`` (Kokoro's) for a blend of
built-in voices. ``GET /v1/speakers`` lists the names of the voices that can be spoken,
as the CosyVoice API services do.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from cosyagent.audio.containers import AudioTooLongError, DecodedAudio, decode_audio
from cosyagent.audio.pcm import resample
from cosyagent.engines.base import EngineError
from cosyagent.runtime import Runtime
from cosyagent.voices.library import ClipDurationError, VoiceInfo, VoiceLibraryError
from cosyagent.web.errors import ApiError

logger = logging.getLogger(__name__)

_CLIP_FIELDS = ("file", "audio", "audio_sample")
_BLEND_FIELDS = {"name", "blend"}


def voices_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    library = runtime.voices

    async def list_voices() -> dict[str, Any]:
        return {"object": "list", "data": [voice_json(v) for v in library.list()]}

    async def create_voice(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            info = await _create_blend(request, runtime)
        elif content_type == "multipart/form-data":
            info = await _create_clip(request, runtime)
        else:
            raise ApiError(
                415,
                "send multipart/form-data (a clip: file, name, text) or JSON (a blend: name, blend)",
                code="unsupported_media_type",
            )
        body = voice_json(info)
        logger.info("created %s voice %s (usable: %s)", info.kind, info.id, info.usable)
        return JSONResponse(body, status_code=201)

    async def get_voice(voice_id: str) -> dict[str, Any]:
        return voice_json(library.get(voice_id))

    async def get_voice_audio(voice_id: str) -> Response:
        wav = await asyncio.to_thread(library.clip_wav, voice_id)
        return Response(wav, media_type="audio/wav")

    async def delete_voice(voice_id: str) -> dict[str, Any]:
        await asyncio.to_thread(library.delete, voice_id)
        logger.info("deleted voice %s", voice_id)
        return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}

    async def list_speakers() -> list[str]:
        return [v.name for v in library.list() if v.usable]

    for prefix in ("/v1/voices", "/v1/audio/voices"):
        router.add_api_route(prefix, list_voices, methods=["GET"])
        router.add_api_route(prefix, create_voice, methods=["POST"], status_code=201)
        # Declared before the catch-all below; ":path" lets ids with slashes reach the validation.
        router.add_api_route(prefix + "/{voice_id}/audio", get_voice_audio, methods=["GET"])
        router.add_api_route(prefix + "/{voice_id:path}", get_voice, methods=["GET"])
        router.add_api_route(prefix + "/{voice_id:path}", delete_voice, methods=["DELETE"])
    router.add_api_route("/v1/speakers", list_speakers, methods=["GET"])
    return router


def voice_json(info: VoiceInfo) -> dict[str, Any]:
    """OpenAI's ``audio.voice`` object, plus what this server knows about the voice."""
    record = info.record
    body: dict[str, Any] = {
        "id": info.id,
        "object": "audio.voice",
        "name": info.name,
        "type": {"clip": "audio_sample"}.get(info.kind, info.kind),
        "created_at": record.created_at if record else 0,
        "usable": info.usable,
    }
    if record is not None and record.kind == "clip":
        body.update(text=record.text, text_source=record.text_source, duration_s=record.duration_s)
    if record is not None and record.kind == "blend":
        body["blend"] = dict(record.blend)
    if info.note:
        body["note"] = info.note
    return body


async def _create_blend(request: Request, runtime: Runtime) -> VoiceInfo:
    try:
        raw = json.loads(await request.body())
    except ValueError as exc:
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(raw, dict):
        raise ApiError(400, "the body must be a JSON object: {name, blend}", code="invalid_value")
    unknown = sorted(set(raw) - _BLEND_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field(s) {unknown}; a blend has name and blend", param=unknown[0])
    if "blend" not in raw:
        raise ApiError(400, "missing required parameter: 'blend'", param="blend", code="missing_required_parameter")
    name = raw.get("name")
    if not isinstance(name, str):
        raise ApiError(400, "missing required parameter: 'name'", param="name", code="missing_required_parameter")
    return await asyncio.to_thread(runtime.voices.create_blend, name, raw["blend"])


async def _create_clip(request: Request, runtime: Runtime) -> VoiceInfo:
    library = runtime.voices
    async with request.form(max_files=1, max_fields=10) as form:
        upload = next((form[f] for f in _CLIP_FIELDS if isinstance(form.get(f), UploadFile)), None)
        if not isinstance(upload, UploadFile):
            raise ApiError(
                400, "missing required parameter: 'file' (the clip)", param="file", code="missing_required_parameter"
            )
        name, text = form.get("name"), form.get("text")
        if not isinstance(name, str):
            raise ApiError(400, "missing required parameter: 'name'", param="name", code="missing_required_parameter")
        if text is not None and not isinstance(text, str):
            raise ApiError(400, "text must be a string", param="text", code="invalid_value")
        data = await upload.read()
    library.check_name(name)  # fail fast, before decoding and transcribing
    clip = await _decode_clip(data, runtime)
    library.check_clip_duration(clip.duration_s)
    text_source: Literal["given", "asr"] = "given"
    if text is None or not text.strip():
        text, text_source = await _transcribe_clip(clip, runtime), "asr"
    try:
        return await asyncio.to_thread(library.create_clip, name, clip.samples, clip.sample_rate, text, text_source)
    except VoiceLibraryError:
        raise
    except OSError as exc:
        logger.error("cannot store a voice clip: %s", exc)
        raise ApiError(500, "the voice could not be stored", code="storage_error") from exc


async def _decode_clip(data: bytes, runtime: Runtime) -> DecodedAudio:
    max_s = runtime.voices.limits.max_seconds
    try:
        # a little past the limit, so that the duration check names the clip's length
        return await asyncio.to_thread(decode_audio, data, max_seconds=max_s + 1.0)
    except AudioTooLongError as exc:
        raise ClipDurationError(f"a voice clip must last at most {max_s:g} s", "file") from exc


async def _transcribe_clip(clip: DecodedAudio, runtime: Runtime) -> str:
    audio = resample(clip.samples, clip.sample_rate, runtime.asr.sample_rate)
    try:
        transcript = await runtime.asr.transcribe(audio)
    except EngineError as exc:  # same kind of error (unavailable: 503), with what the client can do about it
        raise type(exc)(f"cannot transcribe the clip; send its text: {exc}") from exc
    if not transcript.text.strip():
        raise ApiError(400, "no speech was recognized in the clip; send its text", param="text", code="no_speech")
    return transcript.text
