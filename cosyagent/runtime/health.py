"""``GET /v1/health``: what the process runs, whether each engine is loaded, and why not."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

from cosyagent.engines.base import SpeechSynthesizer
from cosyagent.engines.kokoro_tts import KokoroTTS
from cosyagent.engines.kokoro_voices import VOICE_SHA256
from cosyagent.engines.language_guard import LanguageCheckedASR

if TYPE_CHECKING:
    from cosyagent.runtime.process import Runtime

_VERSIONED_PACKAGES = ("cosyagent", "faster-whisper", "kokoro-onnx", "llama-cpp-python", "onnxruntime", "openai")


def health_report(runtime: Runtime) -> dict[str, Any]:
    llm = runtime.llm
    supervisor = runtime.llm_supervisor.health() if runtime.llm_supervisor is not None else {}
    status = "starting" if llm is None else "ok"
    if supervisor and supervisor["state"] != "running":
        status = "degraded"  # the embedded LLM is restarting (or has failed): replies fail meanwhile
    asr, tts, turn_end = runtime.asr, runtime.tts, runtime.turn_end
    return {
        "status": status,
        "sessions": runtime.active_sessions,
        "capacity": runtime.capacity.health(runtime.config.server),
        "engines": {
            "vad": {"engine": runtime.vad.info.name, "loaded": runtime.vad.loaded},
            "asr": {
                "engine": asr.info.name,
                "model": asr.info.model,
                "loaded": asr.loaded,
                "languages": list(asr.info.languages),
                # other languages are refused (not transcribed into invented English)
                "language_check": isinstance(asr, LanguageCheckedASR),
            },
            "llm": {
                "engine": runtime.config.llm.engine,
                "model": llm.model if llm else None,
                "base_url": llm.base_url if llm else None,
                "loaded": llm is not None,
                **supervisor,
            },
            "tts": {
                "engine": tts.info.name,
                "loaded": tts.loaded,
                "voices": list(tts.voices()),
                **voices_missing(tts),
            },
            "turn_model": {"engine": runtime.config.vad.turn_model, "loaded": bool(turn_end and turn_end.loaded)},
        },
        "load_seconds": runtime.load_seconds,
        "versions": {name: _version(name) for name in _VERSIONED_PACKAGES},
    }


def missing_voices_reason(tts: SpeechSynthesizer) -> str | None:
    """Why Kokoro has no English voices (kokoro-js's are absent or refused) and the fix; else None."""
    return tts.missing_voices if isinstance(tts, KokoroTTS) else None


def voices_missing(tts: SpeechSynthesizer) -> dict[str, Any]:
    """The health report's ``voices_missing`` entry: which of Kokoro's English voices are absent, and why."""
    reason = missing_voices_reason(tts)
    return {"voices_missing": {"voices": sorted(VOICE_SHA256), "reason": reason}} if reason else {}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
