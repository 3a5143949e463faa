"""The settings of one Realtime session, validated as `session.update` changes them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cosyagent.agent.idle_timeout import MAX_IDLE_TIMEOUT_MS, MIN_IDLE_TIMEOUT_MS
from cosyagent.agent.session_fields import (
    InvalidSessionValue,
    Modality,
    VoiceNote,
    format_dict,
    no_note,
    parse_format,
    parse_max_tokens,
    parse_modalities,
    parse_object,
    parse_speed,
    parse_string,
    parse_timestamps,
    parse_voice,
    refuse_unknown,
)
from cosyagent.agent.tools import FunctionTool, ToolChoice, choice_to_dict, tool_settings
from cosyagent.audio.wire import AudioFormat
from cosyagent.engines.text_scripts import language_list
from cosyagent.pipeline.timestamps import TimestampKind

# realtime: a conversation with the agent; transcription: the turns' transcripts alone (live
# captions), OpenAI's `session.type` (a WebSocket opened with ?intent=transcription starts one).
SessionType = Literal["realtime", "transcription"]


# The GA session object's fields (openai-python types/realtime/realtime_session_create_request);
# clients often send back the session they were given, so its read-only fields pass too.
SESSION_KEYS = frozenset(
    {"type", "model", "instructions", "output_modalities", "max_output_tokens", "audio", "include", "prompt",
     "tool_choice", "tools", "tracing", "truncation", "parallel_tool_calls", "reasoning", "id", "object",
     "expires_at"}
)  # fmt: skip
# A transcription session's fields (types/realtime/realtime_transcription_session_create_request).
TRANSCRIPTION_SESSION_KEYS = frozenset({"type", "audio", "include", "id", "object", "expires_at"})
UNSUPPORTED_PROMPT = "a stored prompt (OpenAI's platform) is not supported here; send its text as instructions"
AUDIO_INPUT_KEYS = frozenset({"format", "noise_reduction", "transcription", "turn_detection"})
AUDIO_OUTPUT_KEYS = frozenset({"format", "speed", "voice", "timestamps"})  # timestamps: ours, opt-in


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

    def to_dict(self, replies: bool = True) -> dict[str, Any]:
        """``replies``: with the fields about responses (a transcription session makes none)."""
        flags = {"create_response": self.create_response, "interrupt_response": self.interrupt_response}
        common = flags if replies else {}
        if self.semantic:
            return {"type": "semantic_vad", "eagerness": self.eagerness, **common}
        idle = {"idle_timeout_ms": self.idle_timeout_ms} if replies else {}
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            **idle,
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
    transcription_prompt: str | None = None  # handed to the recognizer (Whisper's prompt, Fun-ASR's hotwords)
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
    session_type: SessionType = "realtime"

    @property
    def replies_to_turns(self) -> bool:
        """A turn the server detects is answered: turn detection's create_response, in a
        realtime session (a transcription session makes no responses)."""
        detection = self.turn_detection
        return self.session_type == "realtime" and detection is not None and detection.create_response

    def to_dict(self, session_id: str) -> dict[str, Any]:
        """The `session` object of session.created / session.updated."""
        replies = self.session_type == "realtime"
        audio_input = {
            "format": format_dict(self.input_format),
            "transcription": self._transcription_dict() if self.transcription_reported else None,
            "turn_detection": self.turn_detection.to_dict(replies) if self.turn_detection else None,
        }
        if not replies:
            return {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": session_id,
                "audio": {"input": audio_input},
            }
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
            "audio": {"input": audio_input, "output": output},
            "tools": [tool.to_dict() for tool in self.tools],
            "tool_choice": choice_to_dict(self.tool_choice),
        }

    def updated(
        self,
        session: Mapping[str, Any],
        voice_exists: Callable[[str], bool],
        voice_note: VoiceNote = no_note,
        type_may_change: bool = True,
    ) -> SessionConfig:
        """Apply a `session.update` body; raise InvalidSessionValue naming the bad field.
        ``voice_note``: why a voice that exists cannot be spoken (:data:`VoiceNote`);
        ``type_may_change``: False once the conversation has begun (its type is then fixed)."""
        if not isinstance(session, Mapping):
            raise InvalidSessionValue("session", "session must be an object")
        kind = session.get("type", self.session_type)
        if kind not in ("realtime", "transcription"):
            raise InvalidSessionValue(
                "session.type", f"session type {kind!r} is not supported; use 'realtime' or 'transcription'"
            )
        if kind != self.session_type and not type_may_change:
            raise InvalidSessionValue(
                "session.type", f"this {self.session_type} session's conversation has begun: its type cannot change"
            )
        transcribing = kind == "transcription"
        refuse_unknown(session, TRANSCRIPTION_SESSION_KEYS if transcribing else SESSION_KEYS, "session")
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
            changes["instructions"] = parse_string(session["instructions"], "session.instructions")
        if "output_modalities" in session:
            changes["output_modalities"] = parse_modalities(session["output_modalities"], "session.output_modalities")
        if "max_output_tokens" in session:
            changes["max_output_tokens"] = parse_max_tokens(session["max_output_tokens"], "session.max_output_tokens")
        audio = parse_object(session.get("audio", {}), "session.audio")
        audio_in = parse_object(audio.get("input", {}), "session.audio.input")
        audio_out = parse_object(audio.get("output", {}), "session.audio.output")
        refuse_unknown(audio, frozenset({"input"} if transcribing else {"input", "output"}), "session.audio")
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
            prompt = transcription.get("prompt")  # (the object is taken whole, as its language is)
            param = "session.audio.input.transcription.prompt"
            changes["transcription_prompt"] = None if prompt is None else parse_string(prompt, param) or None
        if "format" in audio_out:
            changes["output_format"] = parse_format(audio_out["format"], "session.audio.output.format")
        if "voice" in audio_out:
            changes["voice"] = parse_voice(audio_out["voice"], voice_exists, "session.audio.output.voice", voice_note)
        if "speed" in audio_out:
            changes["speed"] = parse_speed(audio_out["speed"], "session.audio.output.speed", self.speed_range)
        if "timestamps" in audio_out:
            changes["timestamps"] = parse_timestamps(audio_out["timestamps"], "session.audio.output.timestamps")
        result = replace(self, session_type=kind, **changes)
        if transcribing:
            _check_transcribes(result)
        return result

    def _transcription_dict(self) -> dict[str, Any]:
        described = {"model": self.transcription_model, "language": self.transcription_language}
        return described | ({"prompt": self.transcription_prompt} if self.transcription_prompt else {})

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


def _check_transcribes(config: SessionConfig) -> None:
    """A transcription session reports transcripts and makes no responses."""
    param = "session.audio.input"
    if not config.transcription_reported:
        raise InvalidSessionValue(
            f"{param}.transcription", "a transcription session reports transcripts: its transcription cannot be null"
        )
    if config.turn_detection is not None and config.turn_detection.idle_timeout_ms is not None:
        raise InvalidSessionValue(
            f"{param}.turn_detection.idle_timeout_ms",
            "idle_timeout_ms starts a response, and a transcription session makes none: set it to null",
        )


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
