"""A session's view of the shared recognizer: drafts while the speaker talks, and trust in their language.

**Drafts.** A transcript at a pause has to decode every word of the utterance one step at a time (Moonshine:
~7 ms a token, most of a 3 s question's ~130 ms). Given an earlier take of the utterance's
beginning, a recognizer that ``checks_drafts`` checks those words in one pass and decodes only
the rest. So while the speaker talks and the server has room (``turns.SpeechSoFar``), the
utterance so far is transcribed in the background, at the lowest priority and giving way to any
other job; each take is the next one's draft, and so is a pause's transcript when the speaker
goes on. Measured in docs/benchmarks.md, "Drafts of the transcript while the speaker talks".

**Language.** Where the session names no language, each transcript pays a language check (~a
fifth of the recognition) until the speaker's first turns were found English beyond doubt: a
speaker rarely changes language mid-call, so from then on they are transcribed as English. Until
then a turn's first draft of :data:`SCREEN_FROM_S` or more is also screened (the check's first look
alone, while the speaker talks): a turn whose beginning it finds English beyond doubt is
transcribed at the pause without the check. Any other screen counts for nothing (a second of
English can sound Danish to it); such a turn is checked at the pause as before, so only that
check ever refuses speech. One screen a turn: each costs about as much as a draft.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    EngineCancelled,
    EngineError,
    SpeechRecognizer,
    Transcript,
)
from cosyagent.engines.language_guard import LanguageCheckedASR
from cosyagent.engines.scheduling import giving_way, needed_by

logger = logging.getLogger(__name__)

SURE_ENGLISH = 0.8  # P(English) from the language check that counts a turn as surely English
TRUSTED_AFTER_TURNS = 2  # such turns after which the session's speech is no longer checked
# When a draft is needed: by the next one (turns.DRAFT_EVERY_MS) at the latest; any job needed
# sooner goes first, and one that waits for a lane while a draft runs cancels it.
DRAFT_DUE_S = 0.64
SCREEN_FROM_S = 1.2  # a turn's language is screened on its first draft of this much audio (shorter: a guess)


class SessionASR:
    """Wraps the shared recognizer for one session: :meth:`draft` while the speaker talks,
    :meth:`transcribe` for the transcripts the session reports (each checked against the latest
    draft of its item). ``language``: the session's (None: any, checked until trusted)."""

    def __init__(self, asr: SpeechRecognizer, on_draft: Callable[[str, str, bool], None] | None = None) -> None:
        self._asr = asr
        self._on_draft = on_draft  # told (item id, text, sure of its language) of each draft with words
        # Screens a new speaker's turns while they talk where the pause would check them.
        self._language_id = asr.identifier if isinstance(asr, LanguageCheckedASR) and asr.checks else None
        self._latest: tuple[str, Transcript] | None = None  # an item id and its latest take
        self._job: tuple[asyncio.Task[None], CancelToken] | None = None
        self._past_drafting: str | None = None  # an item whose take came back without tokens (too long)
        # Turns (items) a language check found English beyond doubt: a turn's several transcripts
        # (one per pause) count once, so one long utterance cannot earn the trust of two turns.
        self._sure_english_turns: set[str] = set()
        # The item last screened, and P(English) if the screen found it English beyond doubt.
        self._screened: tuple[str, float | None] | None = None

    def draft(self, item_id: str, audio: AudioF32, language: str | None) -> None:
        """Transcribe ``audio``, the utterance so far of ``item_id``, in the background as its
        draft. Skipped when the recognizer cannot use one, a draft is still under way, or the
        item's last take had words but no tokens (audio past the recognizer's one window)."""
        under_way = self._job is not None and not self._job[0].done()
        if not self._asr.info.checks_drafts or under_way or item_id == self._past_drafting:
            return
        token = CancelToken()
        task = asyncio.create_task(self._run_draft(item_id, audio, language, token), name=f"draft-{item_id}")
        self._job = (task, token)

    async def transcribe(
        self, item_id: str, audio: AudioF32, *, language: str | None, cancel: CancelToken, prompt: str | None = None
    ) -> Transcript:
        """The transcript of ``audio`` for ``item_id``, checked against its latest draft; it becomes
        the draft itself (a pause the speaker goes on after is transcribed again, longer)."""
        self._stop_draft()  # the CPU is wanted now: a draft under way would only delay this
        draft = self._draft_of(item_id)
        language = self._trusted(language)
        screened = self._english_so_far(item_id) if language is None else None
        if screened is not None:
            language = "en"  # the screen while they talked was sure: no check now
        transcript = await self._asr.transcribe(audio, language=language, prompt=prompt, cancel=cancel, draft=draft)
        if screened is not None:
            transcript = replace(transcript, language_probability=screened)
        sure = transcript.language == "en" and (transcript.language_probability or 0.0) >= SURE_ENGLISH
        if sure and len(self._sure_english_turns) < TRUSTED_AFTER_TURNS:  # once trusted, the set need not grow
            self._sure_english_turns.add(item_id)
        self._keep(item_id, transcript)
        return transcript

    def _trusted(self, language: str | None) -> str | None:
        """The language to transcribe as: the session's; else English once this speaker is
        trusted to speak it; else None (checked)."""
        if language is None and len(self._sure_english_turns) >= TRUSTED_AFTER_TURNS:
            return "en"
        return language

    async def aclose(self) -> None:
        """Stop a draft under way and wait for it (the session is closing)."""
        job, self._job = self._job, None
        if job is None:
            return
        task, token = job
        token.cancel()
        task.cancel()
        await asyncio.wait({task})  # (a cancel of the caller's own still goes through)

    async def _run_draft(self, item_id: str, audio: AudioF32, language: str | None, token: CancelToken) -> None:
        # A draft is never reported, so it needs no language check: it is taken in the
        # recognizer's own language (a speaker of another one only gets drafts that do not check out).
        trusted = self._trusted(language)
        language = trusted or next(iter(self._asr.info.languages), None)
        due = time.monotonic() + DRAFT_DUE_S
        try:
            with needed_by(lambda: due), giving_way():
                transcript = await self._asr.transcribe(
                    audio, language=language, cancel=token, draft=self._draft_of(item_id)
                )
                if transcript.text and not transcript.tokens:
                    self._past_drafting = item_id
                self._keep(item_id, transcript)
                if trusted is None:
                    await self._screen(item_id, audio, token)
            if transcript.text and self._on_draft is not None:
                # Sure of its language: the session's or the trusted speaker's, found English in
                # this turn, or never checked (nor will its transcript be).
                sure = trusted is not None or self._language_id is None or self._found_english(item_id)
                self._on_draft(item_id, transcript.text, sure)
        except EngineCancelled:
            return  # someone needed the CPU, or the transcript at the pause came
        except EngineError as exc:
            logger.debug("draft transcript failed: %s", exc)  # the transcript decodes in full
            return

    async def _screen(self, item_id: str, audio: AudioF32, token: CancelToken) -> None:
        """Screen the turn so far for its language, once it is long enough and if not yet done;
        keep the verdict only when it is English beyond doubt."""
        done = self._screened is not None and self._screened[0] == item_id
        if self._language_id is None or done or audio.size < SCREEN_FROM_S * self._asr.sample_rate:
            return
        guess = await self._language_id.screen(audio, cancel=token)
        sure = guess is not None and guess.language == "en" and guess.english >= SURE_ENGLISH
        self._screened = (item_id, guess.english if guess is not None and sure else None)

    def _found_english(self, item_id: str) -> bool:
        """Whether ``item_id`` was found English beyond doubt: by the screen while its speaker
        talked, or by the check of a pause's transcript."""
        return self._english_so_far(item_id) is not None or item_id in self._sure_english_turns

    def _english_so_far(self, item_id: str) -> float | None:
        """P(English) of a screen of ``item_id``'s beginning that found it English beyond doubt."""
        screened = self._screened
        return screened[1] if screened is not None and screened[0] == item_id else None

    def _draft_of(self, item_id: str) -> Transcript | None:
        return self._latest[1] if self._latest is not None and self._latest[0] == item_id else None

    def _keep(self, item_id: str, transcript: Transcript) -> None:
        if transcript.tokens:
            self._latest = (item_id, transcript)

    def _stop_draft(self) -> None:
        if self._job is not None:
            self._job[1].cancel()
