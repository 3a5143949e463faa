"""Word and mouth-shape timings of spoken audio, as clients receive them.

A synthesizer that times its words (:class:`~cosyagent.engines.timings.TimedSynthesizer`)
gives each chunk its words and phonemes; here the phonemes become visemes (the 15 Oculus
ones, :mod:`cosyagent.engines.visemes`) and the times move from the chunk's clock to the
clock of the whole audio the client hears, in milliseconds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from cosyagent.engines.timings import TimedAudio, WordTiming
from cosyagent.engines.visemes import VisemeTiming, viseme_timings

TimestampKind = Literal["word", "viseme"]
TIMESTAMP_KINDS: tuple[TimestampKind, ...] = get_args(TimestampKind)


class InvalidTimestampKinds(ValueError):
    """``where``: "" for the list itself, "[i]" for its i-th entry."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def parse_kinds(value: Any) -> tuple[TimestampKind, ...]:
    """A list of timestamp kinds, in canonical order; :class:`InvalidTimestampKinds` for a bad one."""
    if not isinstance(value, list | tuple):
        raise InvalidTimestampKinds("", f"timestamps must be a list of kinds from {list(TIMESTAMP_KINDS)} (or [])")
    for index, kind in enumerate(value):
        if kind not in TIMESTAMP_KINDS:
            raise InvalidTimestampKinds(
                f"[{index}]", f"unknown timestamp kind {kind!r}; the kinds are {' and '.join(TIMESTAMP_KINDS)}"
            )
    return tuple(kind for kind in TIMESTAMP_KINDS if kind in value)


@dataclass(frozen=True)
class SpeechTimings:
    """When each word and mouth shape of a piece of speech is heard, ms from the piece's first sample."""

    words: tuple[WordTiming, ...]
    visemes: tuple[VisemeTiming, ...]

    @classmethod
    def of(cls, timed: TimedAudio) -> SpeechTimings:
        return cls(timed.words, tuple(viseme_timings(timed.phonemes)))

    def sooner(self, ms: float) -> SpeechTimings:
        """The timings of the same speech with its first ``ms`` cut off (none before 0)."""
        words = tuple(WordTiming(w.text, max(0.0, w.start_ms - ms), max(0.0, w.end_ms - ms)) for w in self.words)
        visemes = tuple(VisemeTiming(v.viseme, max(0.0, v.start_ms - ms)) for v in self.visemes)
        return SpeechTimings(words, visemes)


@dataclass(frozen=True)
class Mark:
    """One timing on the clock of all the audio sent so far: a word or a viseme."""

    at_ms: float  # when it starts: what decides which piece of audio it goes with
    body: dict[str, Any]
    kind: TimestampKind


def marks(timings: SpeechTimings, offset_ms: float, kinds: Collection[TimestampKind]) -> list[Mark]:
    """``timings`` as marks shifted by ``offset_ms`` (integer ms, as the wire has them), in time order."""
    out: list[Mark] = []
    if "word" in kinds:
        for word in timings.words:
            start, end = round(offset_ms + word.start_ms), round(offset_ms + word.end_ms)
            out.append(Mark(offset_ms + word.start_ms, {"text": word.text, "start_ms": start, "end_ms": end}, "word"))
    if "viseme" in kinds:
        for viseme in timings.visemes:
            at = offset_ms + viseme.start_ms
            out.append(Mark(at, {"viseme": viseme.viseme, "start_ms": round(at)}, "viseme"))
    out.sort(key=lambda mark: mark.at_ms)
    return out


def payload(batch: Sequence[Mark]) -> dict[str, Any]:
    """The ``words`` and ``visemes`` fields of a timestamps event (a kind not asked for: an empty list)."""
    return {
        "words": [mark.body for mark in batch if mark.kind == "word"],
        "visemes": [mark.body for mark in batch if mark.kind == "viseme"],
    }


class MarkQueue:
    """Marks waiting for the piece of audio they start in.

    The synthesizer's chunks are added as they come (their marks move onto the clock of all
    the audio so far, counted in the synthesizer's samples); :meth:`until` then hands out
    the marks that start before the end of each piece of audio as it is cut for sending,
    so a mark leaves with the audio it describes, never after it.
    """

    def __init__(self, kinds: Collection[TimestampKind], source_rate: int) -> None:
        self.kinds = tuple(kinds)
        self._rate = source_rate
        self._made_ms = 0.0
        self._pending: list[Mark] = []

    def add(self, samples: int, timings: SpeechTimings | None) -> None:
        if timings is not None and self.kinds:
            self._pending.extend(marks(timings, self._made_ms, self.kinds))
        self._made_ms += 1000.0 * samples / self._rate

    def until(self, end_ms: float) -> list[Mark]:
        """The marks that start before ``end_ms``, in order."""
        count = next((k for k, mark in enumerate(self._pending) if mark.at_ms >= end_ms), len(self._pending))
        taken, self._pending = self._pending[:count], self._pending[count:]
        return taken

    def rest(self) -> list[Mark]:
        """All that is left (at the end: a mark at the last sample's end, the closing ``sil``)."""
        taken, self._pending = self._pending, []
        return taken
