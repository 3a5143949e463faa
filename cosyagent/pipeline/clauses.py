"""Cut a stream of LLM tokens into clauses the synthesizer can speak one at a time.

The first clause is cut early (at a comma, or after three words) because it decides
the time to first audio; later clauses run to the end of a sentence, which sounds
better, unless they grow long, or the listener is about to run out of audio
(:meth:`ClauseSplitter.hurry`): then the words that are there are spoken rather than a
silence while the rest of the sentence is still being written.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s|[。！？]")
_CLAUSE_END = re.compile(r"[,;:—–]\s|[，；：、]")
_MARKUP = re.compile(r"[*_`#>\[\]]+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?…，。；：！？])")

# The first clause's synthesis is most of the time to first audio (Kokoro on 2 cores: ~0.75 s
# for 7 words). Measured with `cosyagent bench` (1 session, 10 turns, idle 2-core machine),
# voice-to-voice p50 / p95: 7 words 1748 / 2055 ms, 4 words 1619 / 1961, 3 words 1542 / 1667.
FIRST_CLAUSE_MAX_WORDS = 3
CLAUSE_MAX_WORDS = 24
# A hurried clause has at least this many words: one word alone sounds like a stumble.
HURRY_MIN_WORDS = 2


def clean_for_speech(text: str) -> str:
    """Drop markdown symbols an LLM may emit; they would be read out loud."""
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(_MARKUP.sub(" ", text).split()))


class ClauseSplitter:
    def __init__(self) -> None:
        self._buffer = ""
        self._emitted = 0

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        clauses: list[str] = []
        while (clause := self._next_clause()) is not None:
            clauses.append(clause)
        return clauses

    def hurry(self) -> str | None:
        """The audio before the next clause is about to run out: the complete words buffered so
        far as a clause (up to the last comma among them, if any), if there are at least
        :data:`HURRY_MIN_WORDS`; else None. The first clause is short already and never hurried."""
        if self._emitted == 0:
            return None
        word_ends = self._word_ends()
        if len(word_ends) < HURRY_MIN_WORDS:
            return None
        clause_ends = [m.end() for m in _CLAUSE_END.finditer(self._buffer[: word_ends[-1]])]
        long_enough = (end for end in reversed(clause_ends) if _words(self._buffer[:end]) >= HURRY_MIN_WORDS)
        cut = next(long_enough, word_ends[-1])
        return self._take(cut) or None

    def flush(self) -> list[str]:
        rest, self._buffer = clean_for_speech(self._buffer), ""
        return [rest] if rest else []

    def _next_clause(self) -> str | None:
        cut = self._cut_position(first=self._emitted == 0)
        if cut is None:
            return None
        # Only markup or punctuation before the cut: dropped, look again.
        return self._take(cut) or self._next_clause()

    def _take(self, cut: int) -> str:
        """The buffer up to ``cut`` as a clause, cleaned for speech (empty if nothing speakable:
        then it is dropped and not counted)."""
        clause, self._buffer = clean_for_speech(self._buffer[:cut]), self._buffer[cut:]
        if clause:
            self._emitted += 1
        return clause

    def _cut_position(self, first: bool) -> int | None:
        sentence_cut = _first_match_end(_SENTENCE_END, self._buffer)
        if first:
            cuts = [c for c in (sentence_cut, _first_match_end(_CLAUSE_END, self._buffer)) if c is not None]
            return min(cuts) if cuts else self._word_limit_cut(FIRST_CLAUSE_MAX_WORDS)
        if sentence_cut is not None:
            return sentence_cut
        long_clause_cuts = (
            m.end()
            for m in _CLAUSE_END.finditer(self._buffer)
            if _words(self._buffer[: m.end()]) >= CLAUSE_MAX_WORDS // 2
        )
        return next(long_clause_cuts, None) or self._word_limit_cut(CLAUSE_MAX_WORDS)

    def _word_limit_cut(self, max_words: int) -> int | None:
        """Cut after ``max_words`` complete words."""
        word_ends = self._word_ends()
        return word_ends[max_words - 1] if len(word_ends) >= max_words else None

    def _word_ends(self) -> list[int]:
        """Where each complete word of the buffer ends, its spaces included (a word is complete
        once a space follows)."""
        return [m.end() for m in re.finditer(r"\S\s+", self._buffer)]


def _first_match_end(pattern: re.Pattern[str], text: str) -> int | None:
    match = pattern.search(text)
    return match.end() if match else None


def _words(text: str) -> int:
    return len(text.split())
