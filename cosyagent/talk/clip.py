"""The clip a talk client speaks: any WAV as 24 kHz mono, and where the speech in it begins and ends."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from cosyagent.audio.pcm import frame_levels_db

Samples = npt.NDArray[np.float32]

RATE = 24000  # the Realtime API's default audio/pcm rate
CHUNK_S = 0.1
CHUNK_SAMPLES = int(RATE * CHUNK_S)
TRAILING_SILENCE_S = 2.0  # sent after the clip so that server VAD ends the turn
SPEECH_THRESHOLD_DBFS = -40.0  # 20 ms frames louder than this are speech (room noise is -45..-65)


class TalkError(Exception):
    """A failure worth one clear line to the user (bad file, unreachable server, error event).
    ``exit_code`` 2 marks what the user can fix (the file, the URL, a server not started)."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def speech_segments(
    samples: Samples,
    rate: int,
    *,
    threshold_dbfs: float = SPEECH_THRESHOLD_DBFS,
    min_gap_s: float = 0.45,
    min_speech_s: float = 0.25,
    frame_s: float = 0.02,
) -> list[tuple[float, float]]:
    """(start, end) seconds of the speech in ``samples``: loud frames joined across gaps
    shorter than ``min_gap_s``; runs shorter than ``min_speech_s`` (clicks, a clipped word
    onset at the very end of a cut) are dropped."""
    width = max(1, int(rate * frame_s))
    frames = samples.size // width
    if frames == 0:
        return []
    loud = np.flatnonzero(frame_levels_db(samples, width) > threshold_dbfs)
    segments: list[tuple[float, float]] = []
    if loud.size == 0:
        return segments
    start = previous = int(loud[0])
    for index in (int(i) for i in loud[1:]):
        if (index - previous - 1) * frame_s >= min_gap_s:
            segments.append((start * frame_s, (previous + 1) * frame_s))
            start = index
        previous = index
    segments.append((start * frame_s, (previous + 1) * frame_s))
    return [(a, b) for a, b in segments if b - a >= min_speech_s]


@dataclass(frozen=True)
class Clip:
    """24 kHz mono speech and where the speech lies in it (seconds from the clip start)."""

    samples: Samples
    speech_start_s: float
    speech_end_s: float
    name: str = "clip"

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.size == 0:
            raise ValueError("a clip needs mono, non-empty audio")
        if not 0.0 <= self.speech_start_s <= self.speech_end_s <= self.duration_s + 1e-6:
            raise ValueError(f"speech bounds {self.speech_start_s}..{self.speech_end_s} outside the clip")

    @property
    def duration_s(self) -> float:
        return self.samples.size / RATE

    def pcm16(self) -> bytes:
        return (np.clip(self.samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()

    @classmethod
    def from_audio(cls, samples: Samples, rate: int, name: str = "clip") -> Clip:
        """Resample to 24 kHz and locate the speech (the whole clip when none is found)."""
        mono = np.asarray(samples, dtype=np.float32)
        audio = mono if rate == RATE else np.asarray(soxr.resample(mono, rate, RATE), dtype=np.float32)
        segments = speech_segments(audio, RATE, min_speech_s=0.08)  # a word onset cut at the end counts
        start, end = (segments[0][0], segments[-1][1]) if segments else (0.0, audio.size / RATE)
        return cls(audio, start, min(end, audio.size / RATE), name)


def load_clip(path: str) -> Clip:
    """Read an audio file (WAV, FLAC, OGG...; any rate, any channel count) as a 24 kHz mono :class:`Clip`."""
    try:
        with open(path, "rb") as file:
            audio, rate = sf.read(file, dtype="float32", always_2d=True)
    except FileNotFoundError as exc:
        raise TalkError(f"no such file: {path}", exit_code=2) from exc
    except OSError as exc:
        raise TalkError(f"cannot read {path}: {exc.strerror or exc}", exit_code=2) from exc
    except (RuntimeError, ValueError) as exc:  # soundfile's errors are RuntimeErrors
        raise TalkError(f"{path} is not an audio file (a WAV, FLAC or OGG recording)", exit_code=2) from exc
    if audio.shape[0] == 0:
        raise TalkError(f"{path} holds no audio", exit_code=2)
    return Clip.from_audio(audio.mean(axis=1), int(rate), name=os.path.basename(path))


def silence(seconds: float) -> bytes:
    return bytes(2 * int(RATE * seconds))
