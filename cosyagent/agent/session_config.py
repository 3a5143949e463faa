"""The settings of one Realtime session, validated as `session.update` changes them."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cosyagent.agent.idle_timeout import MAX_IDLE_TIMEOUT_MS, MIN_IDLE_TIMEOUT_MS
from cosyagent.agent.tools import FunctionTool, ToolChoice, choice_to_dict, tool_settings
from cosyagent.audio.wire import FORMAT_RATES, AudioFormat
from cosyagent.engines.text_scripts import language_list
from cosyagent.pipeline.timestamps import InvalidTimestampKinds, TimestampKind, parse_kinds

Modality = Literal["text", "audio"]


class InvalidSessionValue(ValueError):
    """A session field has a value we cannot accept. ``param`` is its dotted path."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


# The GA session object's fields (openai-python types/realtime/realtime_session_create_request);
# clients often send back the session they were given, so its read-only fields pass too.
SESSION_KEYS = frozenset(
    {"type", "model", "instructions", "output_modalities", "max_output_tokens", "audio", "include", "prompt",
     "tool_choice", "tools", "tracing", "truncation", "parallel_tool_calls", "reasoning", "id", "object",
     "expires_at"}
)  # fmt: skip
UNSUPPORTED_PROMPT = "a stored prompt (OpenAI's platform) is not supported here; send its text as instructions"
AUDIO_INPUT_KEYS = frozenset({"format", "noise_reduction", "transcription", "turn_detection"})
AUDIO_OUTPUT_KEYS = frozenset({"format", "speed", "voice", "timestamps"})  # timestamps: ours, opt-in


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


TurnDetectionType = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]
# semantic_vad: the Smart Turn probability above which a pause ends the turn at once.
EAGERNESS_THRESHOLDS: dict[str, float] = {"low": 0.7, "medium": 0.5, "auto": 0.5, "high": 0.3}


@dataclass(frozen=True)
class TurnDetection:
    """Turn detection. ``server_vad`` ends a turn after ``silence_duration_ms`` of silence.
    ``semantic_vad`` also asks an end-of-turn model (Smart Turn) as soon as the speaker pauses,
    and ends the turn then if it judges the utterance finished (how sure it must be: the
    eagerness); otherwise the silence wait still applies, so it only ever ends turns sooner."""

    type: TurnDetectionType = "server_vad"
    eagerness: Eagerness = "auto"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    # Not in the OpenAI schema: speech must last this long before it interrupts a reply.
    interrupt_min_speech_ms: int = 200
    # server_vad only: silence this long after a response's audio has played triggers a response
    # (cosyagent.agent.idle_timeout); None: off.
    idle_timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if self.type not in ("server_vad", "semantic_vad"):
            raise InvalidSessionValue("type", f"turn detection {self.type!r} is not supported; use server_vad")
        if self.eagerness not in EAGERNESS_THRESHOLDS:
            raise InvalidSessionValue("eagerness", "eagerness must be low, medium, high or auto")
        if not 0.0 < self.threshold < 1.0:
            raise InvalidSessionValue("threshold", "threshold must be between 0 and 1 (exclusive)")
        if not 0 <= self.prefix_padding_ms <= 5000:
            raise InvalidSessionValue("prefix_padding_ms", "prefix_padding_ms must be 0-5000")
        if not 100 <= self.silence_duration_ms <= 10000:
            raise InvalidSessionValue("silence_duration_ms", "silence_duration_ms must be 100-10000")
        if self.idle_timeout_ms is not None:
            if self.semantic:
                raise InvalidSessionValue("idle_timeout_ms", "idle_timeout_ms is only supported for server_vad")
            if not MIN_IDLE_TIMEOUT_MS <= self.idle_timeout_ms <= MAX_IDLE_TIMEOUT_MS:
                raise InvalidSessionValue(
                    "idle_timeout_ms",
                    f"idle_timeout_ms must be {MIN_IDLE_TIMEOUT_MS}-{MAX_IDLE_TIMEOUT_MS} (or null: off),"
                    f" not {self.idle_timeout_ms}",
                )

    @property
    def semantic(self) -> bool:
        return self.type == "semantic_vad"

    @property
    def turn_end_probability(self) -> float:
        return EAGERNESS_THRESHOLDS[self.eagerness]

    def to_dict(self) -> dict[str, Any]:
        common = {"create_response": self.create_response, "interrupt_response": self.interrupt_response}
        if self.semantic:
            return {"type": "semantic_vad", "eagerness": self.eagerness, **common}
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
            **common,
        }


@dataclass(frozen=True)
class SessionConfig:
    model: str
    instructions: str
    voice: str
    speed: float = 1.0
    speed_range: tuple[float, float] = (0.25, 4.0)  # what the TTS engine speaks at: not sent to clients
    input_format: AudioFormat = "audio/pcm"
    output_format: AudioFormat = "audio/pcm"
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    output_modalities: tuple[Modality, ...] = ("audio",)
    max_output_tokens: int | None = None
    transcription_model: str = "whisper-tiny.en"  # the ASR engine's model id
    transcription_language: str | None = None
    transcription_languages: tuple[str, ...] = ("en",)  # what the ASR engine transcribes: not sent to clients
    # audio.input.transcription not null: transcripts reach the client as events. The LLM
    # reads text, so turns are transcribed either way.
    transcription_reported: bool = True
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = "auto"
    timestamps: tuple[TimestampKind, ...] = ()  # response.output_audio_timestamps.delta: words, visemes
    # What the agent says when idle_timeout_ms fires (realtime.idle_message): not sent to
    # clients. None: the LLM writes the prompt from the conversation, as OpenAI's model does.
    idle_message: str | None = None

    def to_dict(self, session_id: str) -> dict[str, Any]:
        """The `session` object of session.created / session.updated."""
        output: dict[str, Any] = {"format": format_dict(self.output_format), "voice": self.voice, "speed": self.speed}
        if self.timestamps:  # only once asked for: OpenAI's clients never see the field
            output["timestamps"] = list(self.timestamps)
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "instructions": self.instructions,
            "output_modalities": list(self.output_modalities),
            "max_output_tokens": self.max_output_tokens if self.max_output_tokens is not None else "inf",
            "audio": {
                "input": {
                    "format": format_dict(self.input_format),
                    "transcription": (
                        {"model": self.transcription_model, "language": self.transcription_language}
                        if self.transcription_reported
                        else None
                    ),
                    "turn_detection": self.turn_detection.to_dict() if self.turn_detection else None,
                },
                "output": output,
            },
            "tools": [tool.to_dict() for tool in self.tools],
            "tool_choice": choice_to_dict(self.tool_choice),
        }

    def updated(
        self, session: Mapping[str, Any], voice_exists: Callable[[str], bool], voice_note: VoiceNote = no_note
    ) -> SessionConfig:
        """Apply a `session.update` body; raise InvalidSessionValue naming the bad field.
        ``voice_note``: why a voice that exists cannot be spoken (:data:`VoiceNote`)."""
        if not isinstance(session, Mapping):
            raise InvalidSessionValue("session", "session must be an object")
        kind = session.get("type", "realtime")
        if kind != "realtime":
            raise InvalidSessionValue("session.type", f"session type {kind!r} is not supported; use 'realtime'")
        refuse_unknown(session, SESSION_KEYS, "session")
        if session.get("prompt"):  # taken silently, the agent would run without the prompt's words
            raise InvalidSessionValue("session.prompt", UNSUPPORTED_PROMPT, code="unsupported_parameter")
        if session.get("include"):  # OpenAI's one value asks for the transcription's logprobs
            raise InvalidSessionValue(
                "session.include",
                "the transcription's logprobs are not available: this server's recognizer does not expose"
                " its token probabilities",
                code="unsupported_parameter",
            )
        changes: dict[str, Any] = tool_settings(session, self.tools, self.tool_choice, "session")
        if "instructions" in session:
            changes["instructions"] = _string(session["instructions"], "session.instructions")
        if "output_modalities" in session:
            changes["output_modalities"] = parse_modalities(session["output_modalities"], "session.output_modalities")
        if "max_output_tokens" in session:
            changes["max_output_tokens"] = parse_max_tokens(session["max_output_tokens"], "session.max_output_tokens")
        audio = parse_object(session.get("audio", {}), "session.audio")
        audio_in = parse_object(audio.get("input", {}), "session.audio.input")
        audio_out = parse_object(audio.get("output", {}), "session.audio.output")
        refuse_unknown(audio, frozenset({"input", "output"}), "session.audio")
        refuse_unknown(audio_in, AUDIO_INPUT_KEYS, "session.audio.input")
        refuse_unknown(audio_out, AUDIO_OUTPUT_KEYS, "session.audio.output")
        if "format" in audio_in:
            changes["input_format"] = parse_format(audio_in["format"], "session.audio.input.format")
        if "turn_detection" in audio_in:
            changes["turn_detection"] = parse_turn_detection(
                audio_in["turn_detection"], self.turn_detection, "session.audio.input.turn_detection"
            )
        if "transcription" in audio_in:
            changes["transcription_reported"] = audio_in["transcription"] is not None
        if audio_in.get("transcription") is not None:
            transcription = parse_object(audio_in["transcription"], "session.audio.input.transcription")
            changes["transcription_language"] = self._transcription_language(transcription.get("language"))
        if "format" in audio_out:
            changes["output_format"] = parse_format(audio_out["format"], "session.audio.output.format")
        if "voice" in audio_out:
            changes["voice"] = parse_voice(audio_out["voice"], voice_exists, "session.audio.output.voice", voice_note)
        if "speed" in audio_out:
            changes["speed"] = parse_speed(audio_out["speed"], "session.audio.output.speed", self.speed_range)
        if "timestamps" in audio_out:
            changes["timestamps"] = parse_timestamps(audio_out["timestamps"], "session.audio.output.timestamps")
        return replace(self, **changes)

    def _transcription_language(self, language: Any) -> str | None:
        if language is None:
            return None
        if isinstance(language, str) and language in self.transcription_languages:
            return language
        raise InvalidSessionValue(
            "session.audio.input.transcription.language",
            f"language {language!r} is not supported by this ASR engine "
            f"({language_list(self.transcription_languages)} only)",
        )


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


def parse_turn_detection(value: Any, current: TurnDetection | None, param: str) -> TurnDetection | None:
    """``server_vad`` or ``semantic_vad``; fields not given keep their current values (a change of
    type keeps the VAD's threshold and padding, which semantic_vad uses underneath)."""
    if value is None:
        return None
    body = parse_object(value, param)
    kind = body.get("type")
    if kind not in ("server_vad", "semantic_vad"):
        raise InvalidSessionValue(f"{param}.type", f"turn detection {kind!r} is not supported; use server_vad")
    base = current or TurnDetection()
    flags = ("create_response", "interrupt_response")
    numbers = ("threshold", "prefix_padding_ms", "silence_duration_ms") if kind == "server_vad" else ()
    fields = (*numbers, *flags, "eagerness") if kind == "semantic_vad" else (*numbers, *flags)
    changes: dict[str, Any] = {name: body[name] for name in fields if body.get(name) is not None}
    for name, val in changes.items():
        expected: tuple[type, ...] = (bool,) if name in flags else (str,) if name == "eagerness" else (int, float)
        if not isinstance(val, expected) or (isinstance(val, bool) and expected != (bool,)):
            raise InvalidSessionValue(f"{param}.{name}", f"{name} has the wrong type: {val!r}")
    idle = body.get("idle_timeout_ms")
    if kind == "semantic_vad" and idle is not None:
        raise InvalidSessionValue(f"{param}.idle_timeout_ms", "idle_timeout_ms is only supported for server_vad")
    if idle is not None and (isinstance(idle, bool) or not isinstance(idle, int)):
        raise InvalidSessionValue(f"{param}.idle_timeout_ms", f"idle_timeout_ms must be an integer of ms: {idle!r}")
    if kind == "semantic_vad" or "idle_timeout_ms" in body:
        changes["idle_timeout_ms"] = idle
    try:
        return replace(base, type=kind, **changes)
    except InvalidSessionValue as exc:
        raise InvalidSessionValue(f"{param}.{exc.param}", str(exc)) from exc


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


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise InvalidSessionValue(param, f"{param.rsplit('.', 1)[-1]} must be a string")
    return value


def parse_object(value: Any, param: str) -> Mapping[str, Any]:
    """``value`` if it is an object (a shallow copy), else InvalidSessionValue naming ``param``."""
    if not isinstance(value, Mapping):
        raise InvalidSessionValue(param, f"{param} must be an object")
    return copy.copy(value)
