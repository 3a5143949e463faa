"""The process's engines, built from config, loaded once and shared by every session."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosyagent.agent.realtime_core import CoreLimits, RealtimeCore
from cosyagent.agent.session import SessionEngines
from cosyagent.agent.session_config import InvalidSessionValue, SessionConfig, TurnDetection
from cosyagent.config import Config, ConfigError
from cosyagent.engines.base import (
    Engine,
    SpeechRecognizer,
    SpeechSynthesizer,
    TurnEndPredictor,
    VoiceActivityDetector,
)
from cosyagent.engines.llama_process import LlamaServerProcess
from cosyagent.engines.llm import OpenAICompatibleLLM
from cosyagent.engines.smart_turn import SmartTurn
from cosyagent.engines.vad import SileroVAD
from cosyagent.runtime.engine_choice import build_asr, build_embedded_llm, build_tts
from cosyagent.runtime.sessions import SessionRegistry
from cosyagent.telemetry import SessionObserver, Telemetry
from cosyagent.voices.library import ClipLimits, VoiceLibrary
from cosyagent.voices.synthesizer import LibrarySynthesizer

logger = logging.getLogger(__name__)

_VERSIONED_PACKAGES = ("cosyagent", "faster-whisper", "kokoro-onnx", "llama-cpp-python", "onnxruntime", "openai")


@dataclass
class Runtime:
    config: Config
    vad: VoiceActivityDetector
    asr: SpeechRecognizer  # asr.engine: whisper (embedded) | funasr
    tts: SpeechSynthesizer  # tts.engine: kokoro (embedded) | cosyvoice
    llm_server: LlamaServerProcess | None
    voices: VoiceLibrary  # built-in and user voices, their speaker features
    speech: LibrarySynthesizer  # the TTS engine speaking any voice of the library
    llm: OpenAICompatibleLLM | None = None
    turn_end: TurnEndPredictor | None = None  # vad.turn_model: semantic_vad's end-of-turn model
    load_seconds: dict[str, float] = field(default_factory=dict)
    telemetry: Telemetry = field(init=False)  # GET /metrics
    sessions: SessionRegistry = field(init=False)  # admits and builds every Realtime session

    def __post_init__(self) -> None:
        self.telemetry = Telemetry(self.queue_depths)
        self.sessions = SessionRegistry(self)

    @property
    def active_sessions(self) -> int:
        return len(self.sessions)

    @classmethod
    def from_config(cls, config: Config) -> Runtime:
        _require(config.vad.engine, "silero", "vad.engine")
        if config.vad.turn_model not in ("smart_turn", "none"):
            raise ConfigError(f"vad.turn_model must be 'smart_turn' or 'none', not {config.vad.turn_model!r}")
        try:
            _default_turn_detection(config)
        except InvalidSessionValue as exc:
            raise ConfigError(f"realtime.{exc.param}: {exc}") from exc
        if config.llm.engine not in ("embedded", "openai"):
            raise ConfigError(f"llm.engine must be 'embedded' or 'openai', not {config.llm.engine!r}")
        if config.llm.engine == "openai" and not (config.llm.base_url and config.llm.model):
            raise ConfigError("llm.engine 'openai' needs llm.base_url and llm.model (or COSYAGENT_LLM_BASE_URL/_MODEL)")
        server = build_embedded_llm(config.llm) if config.llm.engine == "embedded" else None
        tts, features = build_tts(config.tts)
        limits = ClipLimits(config.limits.voice_clip_min_seconds, config.limits.voice_clip_max_seconds)
        voices = VoiceLibrary(
            Path(config.server.data_dir).expanduser() / "voices",
            features,
            limits,
            aliases=config.realtime.voice_aliases,
            default_voice=config.realtime.voice,
        )
        return cls(
            config=config,
            vad=SileroVAD(),
            asr=build_asr(config.asr),
            tts=tts,
            llm_server=server,
            voices=voices,
            speech=LibrarySynthesizer(tts, voices),
            turn_end=SmartTurn(threads=config.vad.turn_model_threads)
            if config.vad.turn_model == "smart_turn"
            else None,
        )

    async def start(self) -> None:
        """Load every model (off the event loop) and start the embedded LLM server."""
        loop = asyncio.get_running_loop()
        engines: list[tuple[str, Engine]] = [("vad", self.vad), ("asr", self.asr), ("tts", self.tts)]
        for name, engine in engines + ([("turn_model", self.turn_end)] if self.turn_end else []):
            began = time.monotonic()
            await loop.run_in_executor(None, engine.load)
            self.load_seconds[name] = round(time.monotonic() - began, 2)
        if self.config.realtime.voice not in self.tts.voices():
            raise ConfigError(f"realtime.voice {self.config.realtime.voice!r} is not one of {self.tts.voices()}")
        began = time.monotonic()
        await loop.run_in_executor(None, self.voices.open)  # logs which voices were warmed
        self.load_seconds["voices"] = round(time.monotonic() - began, 2)
        began = time.monotonic()
        if self.llm_server is not None:
            await self.llm_server.start()
            self.llm = OpenAICompatibleLLM(
                self.llm_server.base_url, self.llm_server.model, timeout_s=self.config.llm.timeout_s
            )
        else:
            assert self.config.llm.base_url and self.config.llm.model  # checked in from_config
            self.llm = OpenAICompatibleLLM(
                self.config.llm.base_url, self.config.llm.model, self.config.llm.api_key, self.config.llm.timeout_s
            )
        self.load_seconds["llm"] = round(time.monotonic() - began, 2)
        logger.info("engines ready in %s", self.load_seconds)

    async def stop(self) -> None:
        if self.llm is not None:
            await self.llm.aclose()
        if self.llm_server is not None:
            await self.llm_server.stop()
        self.vad.close()
        self.asr.close()
        self.tts.close()
        if self.turn_end is not None:
            self.turn_end.close()

    def session_engines(self) -> SessionEngines:
        if self.llm is None:
            raise RuntimeError("Runtime.start() has not run")
        return SessionEngines(asr=self.asr, llm=self.llm, tts=self.speech, turn_end=self.turn_end)

    def voice_exists(self, voice: str) -> bool:
        """Any voice of the library: built-in, or a user voice by id or name."""
        return self.voices.exists(voice)

    def queue_depths(self) -> dict[str, int]:
        """Calls waiting on (or running in) each engine's worker; the VAD runs inline and the LLM remotely."""
        depths = {"asr": self.asr.queue_depth, "tts": self.tts.queue_depth}
        if self.turn_end is not None:
            depths["turn"] = self.turn_end.queue_depth
        return depths

    def new_core(
        self, model: str | None, observer: SessionObserver | None = None, *, audio_on_media_tracks: bool = False
    ) -> RealtimeCore:
        """A fresh protocol core with this server's defaults (one per connection); ``observer``
        is told when each VAD frame is scored (see :mod:`cosyagent.telemetry`)."""
        rt = self.config.realtime
        config = self.session_defaults(model)
        limits = CoreLimits(
            max_event_bytes=rt.max_event_bytes,
            max_append_bytes=rt.max_append_bytes,
            max_buffer_seconds=rt.max_buffer_seconds,
            max_context_items=rt.max_context_items,
        )
        vad = self.vad.new_stream()
        core = RealtimeCore(
            config,
            vad=observer.timed_vad(vad) if observer is not None else vad,
            tts_sample_rate=self.tts.sample_rate,
            voice_exists=self.voice_exists,
            limits=limits,
            audio_on_media_tracks=audio_on_media_tracks,
        )
        if observer is not None:
            observer.vad_threshold = lambda: (
                core.config.turn_detection.threshold if core.config.turn_detection else None
            )
        return core

    def session_defaults(self, model: str | None) -> SessionConfig:
        """A new session's configuration: the server's realtime defaults and what the ASR engine transcribes."""
        rt = self.config.realtime
        return SessionConfig(
            model=model or rt.model,
            instructions=rt.instructions,
            voice=rt.voice,
            turn_detection=_default_turn_detection(self.config),
            max_output_tokens=rt.max_output_tokens,
            transcription_model=self.asr.info.model,
            transcription_languages=self.asr.info.languages,
        )

    def model_ids(self) -> list[str]:
        """What ``/v1/models`` lists: the realtime model, then the engines' models."""
        ids = [self.config.realtime.model, self.asr.info.model, self.tts.info.model]
        if self.llm is not None:
            ids.append(self.llm.info.model)
        return ids

    def health(self) -> dict[str, Any]:
        llm_model = self.llm.model if self.llm else None
        return {
            "status": "ok" if self.llm is not None else "starting",
            "sessions": self.active_sessions,
            "engines": {
                "vad": {"engine": self.vad.info.name, "loaded": self.vad.loaded},
                "asr": {
                    "engine": self.asr.info.name,
                    "loaded": self.asr.loaded,
                    "languages": list(self.asr.info.languages),
                },
                "llm": {
                    "engine": self.config.llm.engine,
                    "model": llm_model,
                    "base_url": self.llm.base_url if self.llm else None,
                    "loaded": self.llm is not None,
                },
                "tts": {"engine": self.tts.info.name, "loaded": self.tts.loaded, "voices": list(self.tts.voices())},
                "turn_model": {
                    "engine": self.config.vad.turn_model,
                    "loaded": bool(self.turn_end and self.turn_end.loaded),
                },
            },
            "load_seconds": self.load_seconds,
            "versions": {name: _version(name) for name in _VERSIONED_PACKAGES},
        }


def _default_turn_detection(config: Config) -> TurnDetection:
    rt = config.realtime
    return TurnDetection(
        type=rt.turn_detection,  # type: ignore[arg-type]  # validated by TurnDetection itself
        eagerness=rt.eagerness,  # type: ignore[arg-type]
        threshold=rt.threshold,
        prefix_padding_ms=rt.prefix_padding_ms,
        silence_duration_ms=rt.silence_duration_ms,
        interrupt_min_speech_ms=rt.interrupt_min_speech_ms,
    )


def _require(value: str, expected: str, key: str) -> None:
    if value != expected:
        raise ConfigError(f"{key} {value!r} is not available in this build; use {expected!r}")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
