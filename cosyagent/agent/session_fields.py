"""One field of a Realtime session or response: its value checked, or InvalidSessionValue
naming its dotted path (``session.audio.output.speed``) and what is wrong with it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Literal

from cosyagent.audio.wire import FORMAT_RATES, AudioFormat
from cosyagent.pipeline.timestamps import InvalidTimestampKinds, TimestampKind, parse_kinds

Modality = Literal["text", "audio"]


class InvalidSessionValue(ValueError):
    """A session field has a value we cannot accept. ``param`` is its dotted path."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


# The beta Realtime API's names (OpenAI-Beta: realtime=v1) and where the GA API has them:
# a client written for the beta is told the new name, not only that the old one is unknown.
BETA_NAMES = {
    "session.modalities": "session.output_modalities",
    "session.voice": "session.audio.output.voice",
    "session.speed": "session.audio.output.speed",
    "session.input_audio_format": "session.audio.input.format",
    "session.output_audio_format": "session.audio.output.format",
    "session.input_audio_transcription": "session.audio.input.transcription",
    "session.input_audio_noise_reduction": "session.audio.input.noise_reduction",
    "session.turn_detection": "session.audio.input.turn_detection",
    "session.max_response_output_tokens": "session.max_output_tokens",
    "response.modalities": "response.output_modalities",
    "response.voice": "response.audio.output.voice",
    "response.output_audio_format": "response.audio.output.format",
    "response.max_response_output_tokens": "response.max_output_tokens",
}


def refuse_unknown(fields: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    """InvalidSessionValue ``unknown_parameter`` for the first field not in ``known``; ``where``:
    the path of ``fields`` ("" for a client event's own fields)."""
    unknown = sorted(str(key) for key in fields if key not in known)
    if unknown:
        param = f"{where}.{unknown[0]}" if where else unknown[0]
        message = f"Unknown parameter: '{param}'."
        if param in BETA_NAMES:
            message += f" That is the beta Realtime API's name; this server speaks the GA API: '{BETA_NAMES[param]}'."
        raise InvalidSessionValue(param, message, code="unknown_parameter")


VoiceNote = Callable[[str], str | None]
"""Why a voice of the library cannot be spoken by this server's engine (a clip Piper cannot
clone), or None when it can."""


def no_note(_voice: str) -> str | None:
    return None


def format_dict(fmt: AudioFormat) -> dict[str, Any]:
    return {"type": fmt, "rate": FORMAT_RATES[fmt]} if fmt == "audio/pcm" else {"type": fmt}


def parse_format(value: Any, param: str) -> AudioFormat:
    fmt = parse_object(value, param)
    kind = fmt.get("type", "audio/pcm")
    if kind not in FORMAT_RATES:
        raise InvalidSessionValue(
            f"{param}.type", f"audio format {kind!r} is not supported; use audio/pcm, audio/pcmu or audio/pcma"
        )
    rate = fmt.get("rate")
    if rate is not None and rate != FORMAT_RATES[kind]:
        raise InvalidSessionValue(f"{param}.rate", f"{kind} must have rate {FORMAT_RATES[kind]}, not {rate!r}")
    result: AudioFormat = kind
    return result


def parse_voice(value: Any, voice_exists: Callable[[str], bool], param: str, voice_note: VoiceNote = no_note) -> str:
    voice = value.get("id") if isinstance(value, Mapping) else value
    if not isinstance(voice, str) or not voice:
        raise InvalidSessionValue(param, "voice must be a voice name or {'id': ...}")
    if not voice_exists(voice):
        raise InvalidSessionValue(param, f"unknown voice {voice!r}; GET /v1/voices lists the available ones")
    if (note := voice_note(voice)) is not None:  # refused here, not by every reply after it
        raise InvalidSessionValue(param, f"voice {voice!r} cannot be spoken: {note}", code="voice_not_usable")
    return voice


def parse_timestamps(value: Any, param: str) -> tuple[TimestampKind, ...]:
    """``["word", "viseme"]``, either, or none (``[]`` or null: off)."""
    if value is None:
        return ()
    try:
        return parse_kinds(value)
    except InvalidTimestampKinds as exc:
        raise InvalidSessionValue(param + exc.where, str(exc)) from exc


def parse_speed(value: Any, param: str, speed_range: tuple[float, float]) -> float:
    """A speed the voice can speak at: refused here, not by every reply after it."""
    low, high = speed_range
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidSessionValue(param, f"speed must be a number between {low:g} and {high:g} (this server's voice)")
    return float(value)


def parse_modalities(value: Any, param: str) -> tuple[Modality, ...]:
    if value in (["audio"], ["text"], ["text", "audio"], ["audio", "text"]):
        return ("text",) if value == ["text"] else ("audio",)
    raise InvalidSessionValue(param, "output_modalities must be ['audio'] or ['text']")


def parse_max_tokens(value: Any, param: str) -> int | None:
    if value == "inf" or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise InvalidSessionValue(param, "max_output_tokens must be 1-4096 or 'inf'")
    return value


def parse_string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise InvalidSessionValue(param, f"{param.rsplit('.', 1)[-1]} must be a string")
    return value


def parse_object(value: Any, param: str) -> Mapping[str, Any]:
    """``value`` if it is an object (a shallow copy), else InvalidSessionValue naming ``param``."""
    if not isinstance(value, Mapping):
        raise InvalidSessionValue(param, f"{param} must be an object")
    return copy.copy(value)
