"""Fun-ASR-Nano speech recognition (funasr): Chinese, English, Japanese and Chinese dialects.

The model directory has the Fun-ASR-Nano-2512 layout (``config.yaml``, ``model.pt``,
``Qwen3-0.6B/``) and is read from disk only: ``funasr`` is imported lazily in
:meth:`FunASRNano.load` (it takes seconds) and never downloads anything here. One
utterance per call (the pipeline's VAD segments it), on the engine's single thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    EngineError,
    EngineExecutor,
    EngineInfo,
    EngineUnavailableError,
    Transcript,
    TranscriptSegment,
)

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16_000
REQUIRED_FILES = ("config.yaml", "model.pt", "Qwen3-0.6B/config.json")
# Fun-ASR-Nano names its output language in its prompt ("语音转写成中文").
_LANGUAGE_NAMES = {"zh": "中文", "en": "英文", "ja": "日文"}


def resolve_device(device: str) -> str:
    """``auto``: CUDA when torch sees a GPU, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _language_tag(language: str | None) -> str | None:
    if language is None or language in ("", "auto"):
        return None
    return language.strip().lower().replace("_", "-").split("-")[0]


class FunASRNano:
    """Fun-ASR-Nano-2512 through ``funasr.AutoModel``; hotwords, language and ITN from config."""

    name = "fun-asr-nano"
    sample_rate: int = _SAMPLE_RATE
    info = EngineInfo(name, "fun-asr-nano-2512", _SAMPLE_RATE, languages=("zh", "en", "ja"))

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        language: str | None = None,
        hotwords: Sequence[str] = (),
        itn: bool = True,
        max_new_tokens: int = 512,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        self.model_dir = Path(model_dir).expanduser()
        self.device = device
        self.language = _language_tag(language)
        self.hotwords = tuple(hotwords)
        self.itn = itn
        self.max_new_tokens = max_new_tokens
        self._model: Any = None
        self._executor = EngineExecutor("asr")

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def queue_depth(self) -> int:
        return self._executor.queue_depth

    def load(self) -> None:
        """Import funasr, build the model from the local directory, warm up once (blocking)."""
        if self._model is not None:
            return
        if not self.model_dir.is_dir():
            raise EngineUnavailableError(
                f"Fun-ASR-Nano model directory {self.model_dir} does not exist; "
                "run `cosyagent models download Fun-ASR-Nano-2512` or set asr.model_dir"
            )
        missing = [name for name in REQUIRED_FILES if not (self.model_dir / name).is_file()]
        if missing:
            raise EngineUnavailableError(f"Fun-ASR-Nano model in {self.model_dir} is incomplete: missing {missing}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("MODELSCOPE_OFFLINE", "1")
        started = time.perf_counter()
        try:
            from funasr import AutoModel  # deferred: importing funasr takes seconds
        except ImportError as exc:
            raise EngineUnavailableError(f"funasr is not installed (pip install 'cosyagent[funasr]'): {exc}") from exc
        llm_dir = str(self.model_dir / "Qwen3-0.6B")  # else funasr resolves it against the working directory
        device = resolve_device(self.device)
        try:
            model = AutoModel(
                model=str(self.model_dir),
                device=device,
                disable_update=True,
                disable_pbar=True,
                llm_conf={"init_param_path": llm_dir},
                tokenizer_conf={"init_param_path": llm_dir},
            )
        except Exception as exc:  # funasr raises RuntimeError/AssertionError/OSError variants
            raise EngineUnavailableError(f"cannot load Fun-ASR-Nano from {self.model_dir}: {exc}") from exc
        loaded_s = time.perf_counter() - started
        self._model = model
        noise = np.random.default_rng(0).normal(0.0, 0.01, _SAMPLE_RATE).astype(np.float32)
        self._run(noise, self.language, None, 8)
        logger.info(
            "Fun-ASR-Nano loaded on %s in %.2f s, warmed up in %.2f s",
            device,
            loaded_s,
            time.perf_counter() - started - loaded_s,
        )

    async def transcribe(
        self,
        audio: AudioF32,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        draft: Transcript | None = None,
    ) -> Transcript:
        """Transcribe one utterance of mono float32 16 kHz audio (``draft`` is accepted and ignored).

        ``prompt`` is added to the configured hotwords (comma-separated). A call still
        queued when ``cancel`` fires is skipped; a decode already running finishes.
        """
        tag = _language_tag(language) or self.language
        if tag is not None and tag not in self.info.languages:
            raise EngineError(f"Fun-ASR-Nano transcribes {', '.join(self.info.languages)}, not {language!r}")
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise EngineError(f"expected mono audio (1-D), got shape {samples.shape}")
        if self._model is None:
            raise EngineUnavailableError("FunASRNano.load() has not been called")
        if samples.size == 0:
            return Transcript(text="", language=tag or "", duration_s=0.0)
        extra = tuple(w.strip() for w in (prompt or "").split(",") if w.strip())
        return await self._executor.run(lambda: self._run(samples, tag, extra, self.max_new_tokens), cancel)

    def _run(self, audio: AudioF32, tag: str | None, extra: Sequence[str] | None, max_tokens: int) -> Transcript:
        model = self._model
        if model is None:
            raise EngineUnavailableError("FunASRNano is closed")
        import torch

        started = time.perf_counter()
        try:
            results = model.generate(
                input=[torch.from_numpy(np.ascontiguousarray(audio))],
                cache={},
                batch_size=1,
                language=_LANGUAGE_NAMES.get(tag) if tag else None,
                hotwords=[*self.hotwords, *(extra or ())],
                itn=self.itn,
                max_length=max_tokens,
                disable_pbar=True,
            )
        except Exception as exc:
            raise EngineError(f"Fun-ASR-Nano failed: {exc}") from exc
        if not isinstance(results, list) or not results or not isinstance(results[0], dict):
            raise EngineError(f"Fun-ASR-Nano returned an unexpected result: {type(results).__name__}")
        text = str(results[0].get("text", "")).strip()
        duration_s = audio.size / _SAMPLE_RATE
        logger.debug("transcribed %.2f s of audio in %.3f s", duration_s, time.perf_counter() - started)
        segment = TranscriptSegment(start_s=0.0, end_s=duration_s, text=text)
        return Transcript(text=text, language=tag or "", duration_s=duration_s, segments=(segment,))

    def close(self) -> None:
        self._executor.shutdown()
        self._model = None
