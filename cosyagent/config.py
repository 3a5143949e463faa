"""Configuration: a YAML file (configs/default.yaml by default) plus environment overrides.

Every section is a frozen dataclass; unknown keys are errors, so a typo never passes
silently. The YAML names engines by kind ("whisper", "kokoro"), never Python classes.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8188
    max_sessions: int = 16
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class RealtimeConfig:
    model: str = "cosyagent-realtime"
    instructions: str = "You are a friendly voice assistant. Answer in one or two short sentences."
    voice: str = "jf_alpha"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    interrupt_min_speech_ms: int = 200  # shorter sounds (a cough, a fragment) don't cut the agent off
    max_output_tokens: int = 150
    output_lead_ms: int = 300  # audio is sent at most this far ahead of real time
    max_event_bytes: int = 1 << 20
    max_append_bytes: int = 512 * 1024
    max_buffer_seconds: float = 120.0
    max_context_items: int = 20


@dataclass(frozen=True)
class VADConfig:
    engine: str = "silero"


@dataclass(frozen=True)
class ASRConfig:
    engine: str = "whisper"
    threads: int = 2
    beam_size: int = 1


@dataclass(frozen=True)
class LLMConfig:
    engine: str = "embedded"  # "embedded" (llama.cpp, started by us) or "openai" (any compatible endpoint)
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    threads: int = 2
    context_tokens: int = 2048
    timeout_s: float = 30.0


@dataclass(frozen=True)
class TTSConfig:
    engine: str = "kokoro"
    threads: int = 2


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    realtime: RealtimeConfig = field(default_factory=RealtimeConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)


T = TypeVar("T")

ENV_OVERRIDES = {
    "COSYAGENT_LLM_BASE_URL": ("llm", "base_url"),
    "COSYAGENT_LLM_MODEL": ("llm", "model"),
    "COSYAGENT_LLM_API_KEY": ("llm", "api_key"),
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
    if env.get("COSYAGENT_LLM_BASE_URL"):
        raw["llm"]["engine"] = "openai"
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
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, f"{where}{name}.")
        elif isinstance(default, tuple):
            values[name] = tuple(value or ())
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
