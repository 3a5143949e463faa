"""An English-only recognizer that refuses speech in other languages instead of inventing text."""

from __future__ import annotations

from dataclasses import replace

from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    EngineInfo,
    SpeechRecognizer,
    Transcript,
    UnsupportedLanguageError,
)
from cosyagent.engines.language_id import SpokenLanguageID
from cosyagent.engines.scheduling import holding_lane
from cosyagent.engines.text_scripts import language_list


class LanguageCheckedASR:
    """``asr`` behind a language check: audio judged to be another language raises
    :class:`UnsupportedLanguageError` before it is transcribed.

    A caller that names the language (``transcribe(language="en")``) is taken at its word:
    no check, no cost. Otherwise every utterance pays one Whisper base encoder pass on its
    first seconds (see :mod:`cosyagent.engines.language_id`), queued like any engine job, and
    the transcript carries P(English) as ``language_probability``.
    """

    def __init__(self, asr: SpeechRecognizer, identifier: SpokenLanguageID) -> None:
        self._asr = asr
        self._identifier = identifier
        self.name = asr.name
        self.sample_rate = asr.sample_rate

    @property
    def info(self) -> EngineInfo:
        return self._asr.info

    @property
    def recognizer(self) -> SpeechRecognizer:
        """The recognizer behind the check."""
        return self._asr

    @property
    def identifier(self) -> SpokenLanguageID:
        return self._identifier

    @property
    def checks(self) -> bool:
        """Whether speech in an unnamed language is checked: the identifier hears the recognizer's
        sample rate (otherwise it is passed on unchecked)."""
        return self._identifier.sample_rate == self.sample_rate

    @property
    def loaded(self) -> bool:
        return self._asr.loaded and self._identifier.loaded

    @property
    def queue_depth(self) -> int:
        return self._asr.queue_depth + self._identifier.queue_depth

    def load(self) -> None:
        self._asr.load()
        self._identifier.load()

    async def transcribe(
        self,
        audio: AudioF32,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        draft: Transcript | None = None,
    ) -> Transcript:
        if language is not None or not self.checks:
            return await self._asr.transcribe(audio, language=language, prompt=prompt, cancel=cancel, draft=draft)
        async with holding_lane():  # the check and the transcript back to back, as one job
            guess = await self._identifier.identify(audio, cancel=cancel)
            if guess is not None and guess.not_english:
                understood = language_list(self.info.languages)
                raise UnsupportedLanguageError(
                    f"this sounds like {guess.name} ({guess.language}, probability {guess.probability:.2f}); "
                    f"the {self.info.model} recognizer understands {understood} only, so it was not transcribed "
                    "(a multilingual recognizer is asr.engine: funasr)",
                    guess.language,
                )
            transcript = await self._asr.transcribe(audio, language=language, prompt=prompt, cancel=cancel, draft=draft)
        return transcript if guess is None else replace(transcript, language_probability=guess.english)

    def close(self) -> None:
        self._asr.close()
        self._identifier.close()
