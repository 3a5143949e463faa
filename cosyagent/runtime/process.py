"""The process's engines, built from config, loaded once and shared by every session."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosyagent.agent.limits import CoreLimits
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session import SessionEngines
from cosyagent.agent.session_config import SessionConfig, TurnDetection
from cosyagent.agent.session_fields import InvalidSessionValue
from cosyagent.config import Config, ConfigError
from cosyagent.engines.base import (
    ChatLLM,
    Engine,
    OwnSlotsEngine,
    SpeechRecognizer,
    SpeechSynthesizer,
    TurnEndPredictor,
    VoiceActivityDetector,
)
from cosyagent.engines.llama_process import LlamaServerProcess
from cosyagent.engines.llm import OpenAICompatibleLLM
from cosyagent.engines.scheduling import cpu_scheduler
from cosyagent.engines.smart_turn import SmartTurn
from cosyagent.engines.timings import can_time_words
from cosyagent.engines.vad import SileroVAD
from cosyagent.runtime.capacity import (
    FIRST_CLAUSE_TOKENS,
    TYPICAL_REPLY_TOKENS,
    CapacityEstimate,
    estimate_capacity,
    llm_question,
    measure_turn_costs,
)
from cosyagent.runtime.capacity_meter import CapacityMeter
from cosyagent.runtime.engine_choice import build_asr, build_embedded_llm, build_tts
from cosyagent.runtime.health import health_report, missing_voices_reason
from cosyagent.runtime.llm_slots import LLMSlots
from cosyagent.runtime.llm_supervisor import LLMSupervisor, SupervisedLLM
from cosyagent.runtime.sessions import SessionRegistry
from cosyagent.runtime.slot_warmup import spoken_instructions, warm_llm_slots
from cosyagent.runtime.speculation import room_to_draft, room_to_speculate
from cosyagent.telemetry import SessionObserver, Telemetry
from cosyagent.voices.library import ClipLimits, VoiceLibrary
from cosyagent.voices.synthesizer import LibrarySynthesizer

logger = logging.getLogger(__name__)


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
    llm_supervisor: LLMSupervisor | None = None  # restarts the embedded LLM server when it dies
    llm_slots: LLMSlots | None = None  # the embedded server's slots, when it decodes replies together
    turn_end: TurnEndPredictor | None = None  # vad.turn_model: semantic_vad's end-of-turn model
    load_seconds: dict[str, float] = field(default_factory=dict)
    capacity: CapacityMeter = field(init=False)  # measured in start(); with capacity "auto" again when idle
    telemetry: Telemetry = field(init=False)  # GET /metrics
    sessions: SessionRegistry = field(init=False)  # admits and builds every Realtime session
    _stop_observing: Callable[[], None] = field(init=False, default=lambda: None)  # the scheduler's metrics

    def __post_init__(self) -> None:
        self.capacity = CapacityMeter(self._estimate_capacity, self.idle, self._others_work)
        self.telemetry = Telemetry(self.queue_depths, capacity=lambda: self.capacity.report(self.config.server))
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
        scheduler = cpu_scheduler()
        scheduler.resize(self.config.scheduler.lanes)
        yield_ms = self.config.scheduler.yield_to_llm_ms if self.llm_server is not None else 0
        scheduler.yield_ahead_s = yield_ms / 1000 if yield_ms else None
        self._stop_observing = scheduler.observe(self.telemetry.engine_job_started)
        engines: list[tuple[str, Engine]] = [("vad", self.vad), ("asr", self.asr), ("tts", self.tts)]
        for name, engine in engines + ([("turn_model", self.turn_end)] if self.turn_end else []):
            began = time.monotonic()
            await loop.run_in_executor(None, engine.load)
            self.load_seconds[name] = round(time.monotonic() - began, 2)
        if self.config.realtime.voice not in self.tts.voices():
            missing = missing_voices_reason(self.tts)
            raise ConfigError(
                f"realtime.voice {self.config.realtime.voice!r} is not one of {self.tts.voices()}"
                + (f" ({missing})" if missing else "")
            )
        began = time.monotonic()
        await loop.run_in_executor(None, self.voices.open)  # logs which voices were warmed
        self.load_seconds["voices"] = round(time.monotonic() - began, 2)
        began = time.monotonic()
        llm = self.config.llm
        if self.llm_server is not None:
            await self.llm_server.start()
            base_url, model, api_key = self.llm_server.base_url, self.llm_server.model, None
        else:
            assert llm.base_url and llm.model  # checked in from_config
            base_url, model, api_key = llm.base_url, llm.model, llm.api_key
        self.llm = OpenAICompatibleLLM(
            base_url,
            model,
            api_key,
            llm.timeout_s,
            connect_timeout_s=llm.connect_timeout_s,
            seed=llm.seed,
            call_schema=llm.sends_call_schema(),
        )
        if self.llm_server is not None:
            self.llm_supervisor = LLMSupervisor(self.llm_server, self.llm, max_restarts=llm.max_restarts)
            self.llm_supervisor.start()
            self.llm_slots = LLMSlots(llm.parallel) if self._llm_decodes_in_parallel() else None
        self.load_seconds["llm"] = round(time.monotonic() - began, 2)
        logger.info("engines ready in %s", self.load_seconds)
        began = time.monotonic()
        try:
            # The slots first: a turn's cost is then timed as turns run, the instructions cached.
            if self.llm_server is not None and self._llm_decodes_in_parallel():
                server = self.llm_server
                await warm_llm_slots(server.base_url, server.model, self._spoken_instructions(), llm.parallel, 30.0)
                self.load_seconds["llm_slots"] = round(time.monotonic() - began, 2)
            began = time.monotonic()
            await self.capacity.measure()
            self.load_seconds["capacity"] = round(time.monotonic() - began, 2)
            if self.config.server.capacity == "auto":
                self.capacity.watch(self.config.server.capacity_remeasure_s)
        except BaseException:
            await self.stop()  # the LLM server is up: leave nothing running
            raise

    def _llm_decodes_in_parallel(self) -> bool:
        llm = self.config.llm
        return self.llm_server is not None and llm.server == "native" and llm.parallel > 1

    def _spoken_instructions(self) -> str:
        return spoken_instructions(self.config.realtime.instructions, self.speech.info.languages)

    def _llm_tokens_per_turn(self) -> int:
        """The tokens of one reply the next session waits for: all of them when the embedded
        server answers one request at a time, the first clause's when it decodes in parallel."""
        return FIRST_CLAUSE_TOKENS if self._llm_decodes_in_parallel() else TYPICAL_REPLY_TOKENS

    async def _estimate_capacity(self, attempt: int) -> CapacityEstimate:
        """Time one turn on the warmed-up engines (the embedded LLM only: an external one is not
        ours to count) and size the capacity to ``server.latency_budget_ms``; ``attempt``: see
        :func:`llm_question`."""
        rt = self.config.realtime
        embedded_llm = self.llm if self.llm_server is not None else None
        budget_s = self.config.server.latency_budget_ms / 1000
        semantic = rt.turn_detection == "semantic_vad"
        costs = await measure_turn_costs(
            self.asr,
            self.tts,
            rt.voice,
            embedded_llm,
            self._spoken_instructions(),  # the slot it runs on keeps them cached, as warmed
            patience_s=budget_s,
            turn_end=self.turn_end if semantic else None,
            question=llm_question(attempt),
        )
        estimate = estimate_capacity(
            costs,
            budget_s=budget_s,
            end_of_turn_s=rt.silence_duration_ms / 1000,
            reply_tokens=min(self._llm_tokens_per_turn(), rt.max_output_tokens),
            parallel_llm=self._llm_decodes_in_parallel(),
        )
        estimate.log()
        return estimate

    def idle(self) -> bool:
        """No session open, no engine job running or waiting (on the CPU scheduler's lanes or on
        an engine's own slots): a measurement delays no one."""
        own_slots_busy = any(engine.queue_depth for engine in self._own_slots_engines())
        return self.active_sessions == 0 and cpu_scheduler().idle and not own_slots_busy

    def _others_work(self) -> int:
        """Sessions admitted and engine jobs started for them or for requests, since startup: a
        capacity measurement during which this changed timed their work too."""
        own_slots = sum(engine.foreground_jobs_started for engine in self._own_slots_engines())
        return self.sessions.admitted + cpu_scheduler().foreground_jobs_started + own_slots

    def _own_slots_engines(self) -> list[OwnSlotsEngine]:
        return [engine for engine in (self.asr, self.tts) if isinstance(engine, OwnSlotsEngine)]

    async def stop(self) -> None:
        await self.capacity.stop()
        self._stop_observing()
        cpu_scheduler().yield_ahead_s = None
        if self.llm_supervisor is not None:
            await self.llm_supervisor.stop()  # before the server stops: that is no crash
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
        llm: ChatLLM = self.llm
        if self.llm_supervisor is not None:
            llm = SupervisedLLM(self.llm, self.llm_supervisor, self.config.llm.timeout_s, self.llm_slots)
        return SessionEngines(asr=self.asr, llm=llm, tts=self.speech, turn_end=self.turn_end)

    def voice_exists(self, voice: str) -> bool:
        """Any voice of the library: built-in, or a user voice by id or name."""
        return self.voices.exists(voice)

    def voice_note(self, voice: str) -> str | None:
        """Why a voice of the library cannot be spoken by this engine (a clip Piper cannot clone), or None."""
        info = self.voices.find(voice)
        return None if info is None or info.usable else info.note

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
            max_input_audio_speed=rt.max_input_audio_speed,
            input_audio_burst_seconds=rt.input_audio_burst_seconds,
            max_pending_transcripts=rt.max_pending_transcripts,
            max_events_per_second=rt.max_events_per_second,
        )
        vad = self.vad.new_stream()
        core = RealtimeCore(
            config,
            vad=observer.timed_vad(vad) if observer is not None else vad,
            tts_sample_rate=self.tts.sample_rate,
            voice_exists=self.voice_exists,
            voice_note=self.voice_note,
            limits=limits,
            audio_on_media_tracks=audio_on_media_tracks,
            times_words=can_time_words(self.tts),
            speculate_early=lambda: room_to_speculate(self.active_sessions, cpu_scheduler(), self.llm_slots),
            draft_ahead=lambda: self.asr.info.checks_drafts and room_to_draft(cpu_scheduler(), self.llm_slots),
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
            speed_range=self.tts.info.speed_range or SessionConfig.speed_range,
            idle_message=rt.idle_message or None,
        )

    def model_ids(self) -> list[str]:
        """What ``/v1/models`` lists: the realtime model, then the engines' models."""
        ids = [self.config.realtime.model, self.asr.info.model, self.tts.info.model]
        if self.llm is not None:
            ids.append(self.llm.info.model)
        return ids

    def health(self) -> dict[str, Any]:
        return health_report(self)


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
