"""Which engines a config builds (nothing is loaded here)."""

from __future__ import annotations

import numpy as np
import pytest

from cosyagent.config import ConfigError, LLMConfig, TTSConfig
from cosyagent.engines.llama_server import EmbeddedLlamaServer, PythonLlamaServer
from cosyagent.engines.piper_tts import PiperTTS
from cosyagent.runtime.engine_choice import build_embedded_llm, build_tts
from cosyagent.voices.features import CloningUnsupportedError, PiperVoiceFeatures


def test_piper_is_selectable_and_explains_what_it_cannot_do() -> None:
    tts, features = build_tts(TTSConfig(engine="piper", threads=1))
    assert isinstance(tts, PiperTTS) and isinstance(features, PiperVoiceFeatures)
    assert not features.can_clone and features.feature_key == "piper-en_US-joe-medium"
    with pytest.raises(CloningUnsupportedError, match="cannot clone"):
        features.clip_features(np.zeros(16_000, dtype=np.float32), 16_000, "hello")


def test_an_unknown_tts_engine_names_every_choice() -> None:
    with pytest.raises(ConfigError, match="'kokoro', 'piper' or 'cosyvoice'"):
        build_tts(TTSConfig(engine="melotts"))


def test_an_unknown_embedded_llm_names_every_choice() -> None:
    with pytest.raises(ConfigError, match=r"\['qwen2.5-coder-0.5b', 'smollm2'\]"):
        build_embedded_llm(LLMConfig(embedded_model="gemma"))
    assert build_embedded_llm(LLMConfig(embedded_model="qwen2.5-coder-0.5b")).pid is None  # built, not started


def test_the_embedded_llm_server_is_native_with_parallel_slots_unless_python_is_asked_for() -> None:
    native = build_embedded_llm(LLMConfig(parallel=3, context_tokens=1024, server_binary="/opt/llama-server"))
    assert isinstance(native, EmbeddedLlamaServer)
    assert (native.parallel, native.n_ctx) == (3, 1024)  # n_ctx per slot
    assert isinstance(build_embedded_llm(LLMConfig(server="python")), PythonLlamaServer)
    with pytest.raises(ConfigError, match="'native' or 'python'"):
        LLMConfig(server="vllm")
    with pytest.raises(ConfigError, match=r"llm\.parallel must be >= 1"):
        LLMConfig(parallel=0)
