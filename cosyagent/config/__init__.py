"""Configuration: a YAML file (configs/default.yaml by default) plus environment overrides.

Every section is a frozen dataclass; unknown keys are errors, so a typo never passes
silently. The YAML names engines by kind ("whisper", "kokoro"), never Python classes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cosyagent.config.errors import ConfigError as ConfigError
from cosyagent.config.phone import SipConfig as SipConfig
from cosyagent.config.phone import SipRegistration as SipRegistration
from cosyagent.config.phone import TelephonyConfig as TelephonyConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8188
    max_sessions: int = 16
    # Conversations served at once: "auto" = measured at startup and again when idle (runtime/capacity.py),
    # or a number. Always capped by max_sessions; sessions past it are refused (server_at_capacity).
    capacity: int | str = field(default="auto", metadata={"types": (int, str)})
    # Voice-to-voice latency every admitted session should keep when all end their turns at once;
    # ``auto`` capacity is sized to it. 2500 ms: the 3000 ms p95 the 8-session target allows, less a
    # margin for what the formula does not count (replies still being written and spoken beside the
    # turns: sized to 3000, seven admitted reached p95 3.7 s in one of three runs; README "Admission").
    latency_budget_ms: int = 2500
    # With capacity "auto": measure again after this many seconds (0: only at startup), once no
    # session is open and no engine works, so one slow moment at startup does not size admission
    # all day. A measurement during which a session is admitted is dropped.
    capacity_remeasure_s: float = 600.0
    cors_origins: tuple[str, ...] = ()
    # Host names (besides IP addresses and localhost) this server answers to, e.g. the public
    # name behind a reverse proxy; "*" turns the check off. Guards against DNS rebinding.
    allowed_hosts: tuple[str, ...] = ()
    # Bearer keys accepted on every /v1 route and the realtime socket; none: no auth.
    api_keys: tuple[str, ...] = ()
    data_dir: str = "~/.local/share/cosyagent"  # user voices and their cached speaker features
    # On SIGTERM/SIGINT: sessions are told and closed at once (1001); HTTP requests in flight get
    # this long to finish before they are cancelled; then the engines stop.
    drain_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if any(not isinstance(key, str) or not key.strip() for key in self.api_keys):
            raise ConfigError("server.api_keys must be non-empty strings")
        if self.capacity != "auto" and not (
            isinstance(self.capacity, int) and not isinstance(self.capacity, bool) and self.capacity >= 1
        ):
            raise ConfigError(f"server.capacity must be 'auto' or a whole number >= 1, got {self.capacity!r}")
        if self.latency_budget_ms <= 0:
            raise ConfigError(f"server.latency_budget_ms must be positive, got {self.latency_budget_ms}")
        if self.capacity_remeasure_s < 0:
            raise ConfigError(f"server.capacity_remeasure_s must be >= 0, got {self.capacity_remeasure_s}")
        if self.drain_timeout_s < 0:
            raise ConfigError(f"server.drain_timeout_s must be >= 0, got {self.drain_timeout_s}")


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on what the /v1/audio and /v1/voices routes accept."""

    max_upload_mb: float = 25.0
    max_speech_input_chars: int = 4096
    max_transcription_seconds: float = 1800.0
    voice_clip_min_seconds: float = 1.0
    voice_clip_max_seconds: float = 30.0


# OpenAI's built-in voices (GA Realtime and speech), each to the Kokoro voice of the same kind. An
# engine without that voice (Piper, the default, has only joe) speaks realtime.voice for all of them.
OPENAI_VOICE_ALIASES = {
    **dict.fromkeys(("alloy", "shimmer", "marin"), "jf_alpha"),
    **dict.fromkeys(("coral", "nova"), "jf_nezumi"),
    **dict.fromkeys(("sage",), "jf_tebukuro"),
    **dict.fromkeys(("ash", "ballad", "echo", "fable", "onyx", "verse", "cedar"), "jm_kumo"),
}


@dataclass(frozen=True)
class RealtimeConfig:
    model: str = "cosyagent-realtime"
    instructions: str = "You are a friendly voice assistant. Answer in one or two short sentences."
    voice: str = "joe"  # Piper's voice; with tts.engine kokoro: jf_alpha, jm_kumo...
    # OpenAI's voice names -> voices of ours, so SDK code written for OpenAI works unchanged. An alias
    # whose target the running engine lacks speaks ``voice``; a user voice of the same name wins.
    voice_aliases: dict[str, str] = field(default_factory=lambda: dict(OPENAI_VOICE_ALIASES))
    turn_detection: str = "semantic_vad"  # or server_vad: silence alone ends a turn
    eagerness: str = "auto"  # semantic_vad: how sure Smart Turn must be to end a turn at a pause
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    interrupt_min_speech_ms: int = 200  # shorter sounds (a cough, a fragment) don't cut the agent off
    max_output_tokens: int = 80  # ~15 s of speech: voice replies should be short
    output_lead_ms: int = 300  # audio is sent at most this far ahead of real time
    # While the silence wait runs, send the reply's LLM request once the pause's transcript is in
    # (cosyagent.pipeline.llm_prefetch); false: only once the turn has ended.
    reply_ahead: bool = True
    # While a lone speaker talks, the embedded LLM reads the prompt of each draft of their turn
    # (cosyagent.pipeline.llm_prefetch), so the reply reads only what changed; false: it does not.
    read_ahead: bool = True
    # Phone calls (carrier media streams; SIP calls answered without a webhook) open with the
    # agent's greeting, the reply a response.create before anyone spoke gets; false: it waits.
    greet_phone_calls: bool = False
    # What the agent says when a session's idle_timeout_ms fires (the caller silent that long after
    # a reply). null or "": the LLM writes it, as OpenAI's model does; the embedded 0.5B model then
    # asked the caller to go on in 4 of 16 tries, and no line added to its prompt did reliably
    # better (benchmarks/results/idle-prompt-2026-12-07/).
    idle_message: str | None = "Are you still there?"
    max_event_bytes: int = 1 << 20
    max_append_bytes: int = 512 * 1024
    max_buffer_seconds: float = 120.0
    max_context_items: int = 20
    # Per-connection budgets (cosyagent/agent/budget.py): no client may load the server more
    # than a conversation does. The excess is refused with an error event.
    max_input_audio_speed: float = 1.5  # times real time, after a burst of input_audio_burst_seconds
    input_audio_burst_seconds: float = 60.0
    max_events_per_second: float = 100.0  # after a burst of twice as many; 2 s of excess ends the session
    max_pending_transcripts: int = 4  # manual commits still being transcribed

    def __post_init__(self) -> None:
        if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in self.voice_aliases.items()):
            raise ConfigError("realtime.voice_aliases must map voice names to voice names")


@dataclass(frozen=True)
class VADConfig:
    engine: str = "silero"
    turn_model: str = "smart_turn"  # semantic_vad's end-of-turn model (Smart Turn v3.2), or "none"
    turn_model_threads: int = 1


@dataclass(frozen=True)
class ASRConfig:
    # "auto": moonshine where moonshine-cpp is installed (Linux x86_64), else whisper; or name one of
    # "moonshine", "whisper" (embedded) or "funasr" (Fun-ASR-Nano, extra [funasr])
    engine: str = "auto"
    threads: int = 2
    beam_size: int = 1  # whisper
    max_window_s: float = 20.0  # moonshine: longer audio is cut at its pauses into windows of at most this
    model_dir: str | None = None  # funasr: a Fun-ASR-Nano-2512 directory (`cosyagent models download`)
    device: str = "auto"  # funasr: "auto" (cuda if available, else cpu), "cuda:0", "cpu"
    language: str | None = None  # funasr: "zh", "en", "ja" or None (the model decides)
    hotwords: tuple[str, ...] = ()  # funasr: words to favour (names, jargon)
    itn: bool = True  # funasr: inverse text normalization ("二十" -> "20")
    # whisper: refuse speech in another language (Whisper base's language ID) instead of inventing English
    language_check: bool = True


@dataclass(frozen=True)
class LLMConfig:
    engine: str = "embedded"  # "embedded" (llama.cpp, started by us) or "openai" (any compatible endpoint)
    embedded_model: str = "qwen2.5-coder-0.5b"  # embedded: "qwen2.5-coder-0.5b" or "smollm2" (SmolLM2-135M)
    # qwen2.5-coder-0.5b: "iq4_nl" (its Q5_0 matrices re-quantized once for llama.cpp's repacked x86
    # kernels, cosyagent.engines.gguf_requant) or "packaged" (the Q4_K_M file as shipped)
    embedded_weights: str = "iq4_nl"
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    threads: int = 2
    context_tokens: int = 2048  # embedded: per slot (each concurrent reply)
    nice: int = 10  # the embedded server below the speech engines' CPU priority (0 = the same)
    # The longest wait on the endpoint: for the response to start, then for each streamed chunk.
    # An endpoint that accepts and never answers fails the reply (an `error` event) after this.
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0  # the longest wait for the TCP connection to the endpoint
    # embedded: restarts of a server that died, at most this many in any 10 minutes; then it stays down
    max_restarts: int = 5
    # embedded: "native" (llama.cpp's llama-server, `parallel` replies decoded together) or
    # "python" (llama-cpp-python's server: one reply at a time)
    server: str = "native"
    parallel: int = 4  # embedded native: slots (replies generated at once); more wait for a free one
    server_binary: str | None = None  # embedded native: a llama-server of your own (default: .venv/bin, PATH)
    # The sampling seed of every LLM request (the OpenAI API's `seed`): the same prompt then gets the
    # same reply, for benchmarks and tests that compare runs. None: random, each reply drawn afresh.
    seed: int | None = None
    # With tool_choice "required" (or a forced function), hold the reply to the JSON schema of one
    # call to an offered tool, sent as llama.cpp's `json_schema` (engines/tool_text.py). None: for the
    # embedded server only; true: also for an `openai` endpoint that is a llama-server of your own
    # (it does not enforce `required` for every model); false: never.
    call_schema: bool | None = None

    def __post_init__(self) -> None:
        if self.server not in ("native", "python"):
            raise ConfigError(f"llm.server must be 'native' or 'python', not {self.server!r}")
        if self.parallel < 1:
            raise ConfigError(f"llm.parallel must be >= 1, not {self.parallel}")
        if self.embedded_weights not in ("iq4_nl", "packaged"):
            raise ConfigError(f"llm.embedded_weights must be 'iq4_nl' or 'packaged', not {self.embedded_weights!r}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError("llm.timeout_s and llm.connect_timeout_s must be positive")
        if self.max_restarts < 0:
            raise ConfigError(f"llm.max_restarts must be >= 0, not {self.max_restarts}")
        if self.seed is not None and (type(self.seed) is not int or self.seed < 0):
            raise ConfigError(f"llm.seed must be a whole number >= 0 or null, not {self.seed!r}")
        if self.call_schema is not None and type(self.call_schema) is not bool:
            raise ConfigError(f"llm.call_schema must be true, false or null, not {self.call_schema!r}")

    def sends_call_schema(self) -> bool:
        """Whether a request that requires a call carries its JSON schema (see ``call_schema``)."""
        return self.call_schema if self.call_schema is not None else self.engine == "embedded"


@dataclass(frozen=True)
class TTSConfig:
    engine: str = "piper"  # "piper" or "kokoro" (embedded), or "cosyvoice" (Fun-CosyVoice3, extra [cosyvoice])
    threads: int = 2
    model_dir: str | None = None  # cosyvoice: a Fun-CosyVoice3-0.5B-2512 directory
    prompt_wav: str | None = None  # cosyvoice: clip of the default voice (registered once, cached)
    prompt_text: str | None = None  # cosyvoice: what prompt_wav says
    voice_name: str = "default"  # cosyvoice: the name the prompt voice is registered under
    instruct: str | None = None  # cosyvoice: style/dialect instruction for every reply
    max_concurrency: int = 4  # cosyvoice: generations at once; more wait in a queue
    max_queue: int = 32  # cosyvoice: waiting generations; more are refused (busy)
    fp16: bool = False  # cosyvoice: half precision on a GPU


_ICE_SERVER_KEYS = {"urls", "username", "credential"}


@dataclass(frozen=True)
class WebRTCConfig:
    max_calls: int = 4  # concurrent /v1/realtime/calls peer connections; more get 503
    # STUN/TURN servers for the server's own ICE candidates, e.g. {urls: "stun:stun.example.org:3478"}
    # or {urls: "turn:turn.example.org:3478", username: ..., credential: ...}. None by default: no
    # outside server is ever contacted, and only host candidates are offered.
    ice_servers: tuple[dict[str, Any], ...] = ()
    connect_timeout_s: float = 20.0  # a call whose peer connection is not up by then is ended
    # The server's own ICE host candidates; empty: every interface's address (aioice's choice).
    # ["127.0.0.1"] keeps calls on loopback (tests, benchmarks, a server behind a local proxy).
    host_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for address in self.host_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError as exc:
                raise ConfigError(f"webrtc.host_addresses: {address!r} is not an IP address") from exc
        for index, server in enumerate(self.ice_servers):
            where = f"webrtc.ice_servers[{index}]"
            if not isinstance(server, dict) or not server.get("urls"):
                raise ConfigError(f"{where} must be a mapping with 'urls'")
            if set(server) - _ICE_SERVER_KEYS:
                raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(set(server) - _ICE_SERVER_KEYS))}")
            urls = server["urls"]
            if not (isinstance(urls, str) or (isinstance(urls, list) and all(isinstance(u, str) for u in urls))):
                raise ConfigError(f"{where}.urls must be a string or a list of strings")


@dataclass(frozen=True)
class SchedulerConfig:
    """How the in-process engines (ASR, TTS, turn model) share the CPU: ``lanes`` jobs run at
    once, the one needed first goes next (cosyagent/engines/scheduling.py)."""

    lanes: int = 1
    # With the embedded LLM (on these cores): while a reply waits for its first clause, jobs due
    # since after it began wait for it (at most this long), and jobs needed more than this far
    # ahead wait; 0: off.
    yield_to_llm_ms: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= 64:
            raise ConfigError("scheduler.lanes must be 1-64")
        if not 0 <= self.yield_to_llm_ms <= 10000:
            raise ConfigError("scheduler.yield_to_llm_ms must be 0-10000")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    realtime: RealtimeConfig = field(default_factory=RealtimeConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    webrtc: WebRTCConfig = field(default_factory=WebRTCConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    telephony: TelephonyConfig = field(default_factory=TelephonyConfig)
    sip: SipConfig = field(default_factory=SipConfig)


T = TypeVar("T")

ENV_OVERRIDES = {
    "COSYAGENT_LLM_BASE_URL": ("llm", "base_url"),
    "COSYAGENT_LLM_MODEL": ("llm", "model"),
    "COSYAGENT_LLM_API_KEY": ("llm", "api_key"),
    "COSYAGENT_DATA_DIR": ("server", "data_dir"),
    "COSYAGENT_TWILIO_AUTH_TOKEN": ("telephony", "twilio_auth_token"),
    "COSYAGENT_SIP_WEBHOOK_SECRET": ("sip", "webhook_secret"),
}
LIST_ENV_OVERRIDES = {  # comma-separated
    "COSYAGENT_API_KEYS": ("server", "api_keys"),
    "COSYAGENT_CORS_ORIGINS": ("server", "cors_origins"),
    "COSYAGENT_ALLOWED_HOSTS": ("server", "allowed_hosts"),
}


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    source = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {source}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {source} must be a mapping of sections")
    env = os.environ if environ is None else environ
    for variable, (section, key) in ENV_OVERRIDES.items():
        if env.get(variable):
            raw.setdefault(section, {})[key] = env[variable]
    for variable, (section, key) in LIST_ENV_OVERRIDES.items():
        if env.get(variable):
            raw.setdefault(section, {})[key] = [item.strip() for item in env[variable].split(",") if item.strip()]
    if env.get("COSYAGENT_LLM_BASE_URL"):
        raw["llm"]["engine"] = "openai"
    registrations = (raw.get("sip") or {}).get("register") if isinstance(raw.get("sip"), dict) else None
    for entry in [registrations] if isinstance(registrations, dict) else registrations or ():
        if isinstance(entry, dict) and not entry.get("password"):
            entry["password"] = env.get(str(entry.get("password_env") or "COSYAGENT_SIP_PASSWORD"), "")
    return _build(Config, raw, "")


def _build(cls: type[T], raw: Any, where: str) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(raw) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where or 'config'}: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        spec = fields[name]  # its default, without building cls() (which may need values)
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default  # type: ignore[operator]
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, f"{where}{name}.")
        elif "item" in fields[name].metadata:  # a list of sections (or one)
            items = [value] if isinstance(value, dict) else value
            if not isinstance(items, list):
                raise ConfigError(f"{where}{name} must be a list of mappings")
            item = fields[name].metadata["item"]
            values[name] = tuple(_build(item, entry, f"{where}{name}[{i}].") for i, entry in enumerate(items))
        elif isinstance(default, tuple):
            if isinstance(value, str | dict):  # tuple("key") would be its characters
                raise ConfigError(f"{where}{name} must be a list")
            values[name] = tuple(value or ())
        elif "types" in fields[name].metadata:  # a field of several types validates itself
            values[name] = value
        else:
            values[name] = _coerce(value, default, f"{where}{name}")
    return cls(**values)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if value is None or default is None:
        return value
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {expected.__name__}, got {value!r}")
    return value
