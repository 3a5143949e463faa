"""Drafts: Moonshine checks an earlier take of the audio's beginning in one decoder pass instead
of decoding those words step by step, and the transcript is the one it gives without a draft;
``SessionASR`` takes drafts of a session's utterance in the background and hands each item's
latest to its transcript. Real speech, the real model."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from cosyagent.engines import moonshine_asr
from cosyagent.engines.base import AudioF32, CancelToken, EngineInfo, Transcript, UnsupportedLanguageError
from cosyagent.engines.language_guard import LanguageCheckedASR
from cosyagent.engines.language_id import SpokenLanguageID
from cosyagent.engines.moonshine_asr import MoonshineASR
from cosyagent.pipeline.session_asr import SURE_ENGLISH, SessionASR
from tests.engines.test_engine_language_id import identifier
from tests.engines.test_engine_moonshine import moonshine
from tests.support import dublin_question_alone, read_clip

# The module's loaded Moonshine (test_engine_moonshine) and Whisper base language ID (test_engine_language_id).
__all__ = ["identifier", "moonshine"]

RATE = 16_000


class DecoderRuns:
    """Counts the decoder's runs (the encoder's run is not counted)."""

    def __init__(self) -> None:
        self.count = 0

    def since(self) -> int:
        count, self.count = self.count, 0
        return count


@pytest.fixture
def decoder_runs(monkeypatch: pytest.MonkeyPatch) -> DecoderRuns:
    runs = DecoderRuns()
    real = moonshine_asr._run_graph

    def counting(session: Any, outputs: Any, feed: dict[str, Any], options: Any) -> Any:
        runs.count += "input_ids" in feed
        return real(session, outputs, feed, options)

    monkeypatch.setattr(moonshine_asr, "_run_graph", counting)
    return runs


def questions() -> list[AudioF32]:
    return [dublin_question_alone(RATE), read_clip("en_wealth_tax_q.wav", RATE)]


async def takes(asr: MoonshineASR, audio: AudioF32, every_s: float = 0.64) -> Transcript | None:
    """Takes of the audio's beginning, every ``every_s`` as the speaker talks, each the next one's draft."""
    draft = None
    for end_s in np.arange(every_s, audio.size / RATE - 0.2, every_s):
        draft = await asr.transcribe(audio[: int(end_s * RATE)], draft=draft)
    return draft


async def test_a_draft_is_checked_in_one_pass_and_changes_nothing(
    moonshine: MoonshineASR, decoder_runs: DecoderRuns
) -> None:
    for audio in questions():
        decoder_runs.since()
        plain = await moonshine.transcribe(audio)
        assert decoder_runs.since() == len(plain.tokens) + 1 >= 9  # a step a token, and one for the end
        same = await moonshine.transcribe(audio, draft=plain)  # a draft of all of it: checked in one pass
        assert same.tokens == plain.tokens
        assert decoder_runs.since() <= 3  # the pass, the end (and one more, should a near tie fall otherwise)
        draft = await takes(moonshine, audio)
        assert draft is not None and draft.tokens
        decoder_runs.since()
        drafted = await moonshine.transcribe(audio, draft=draft)
        assert (drafted.text, drafted.tokens) == (plain.text, plain.tokens)
        # Takes of less audio may begin otherwise ("And" against "and"): then one pass is wasted.
        assert decoder_runs.since() <= len(plain.tokens) + 2


async def test_a_wrong_draft_is_rejected_where_it_goes_wrong(
    moonshine: MoonshineASR, decoder_runs: DecoderRuns
) -> None:
    dublin, wealth = questions()
    plain = await moonshine.transcribe(wealth)
    other = await moonshine.transcribe(dublin)
    decoder_runs.since()
    assert (await moonshine.transcribe(wealth, draft=other)).tokens == plain.tokens
    assert decoder_runs.since() <= len(plain.tokens) + 2  # at most one pass more than without
    wrong_4th = plain.tokens[:3] + (9999,) + plain.tokens[4:]
    cut = Transcript(text="", language="en", duration_s=0.0, tokens=wrong_4th)
    assert (await moonshine.transcribe(wealth, draft=cut)).tokens == plain.tokens
    assert decoder_runs.since() <= len(plain.tokens) - 1  # three tokens checked, not decoded


async def test_long_audio_cut_into_windows_takes_no_draft(moonshine: MoonshineASR) -> None:
    long = read_clip("en_philosophy_22s.wav", RATE)
    first = await moonshine.transcribe(long)
    assert len(first.segments) == 2 and first.tokens == ()  # no draft to offer: two windows
    again = await moonshine.transcribe(long, draft=await moonshine.transcribe(long[: 5 * RATE]))
    assert again.text == first.text


async def test_a_session_drafts_in_the_background_and_its_transcript_checks_the_latest(
    moonshine: MoonshineASR,
) -> None:
    asr = SessionASR(moonshine)
    audio = questions()[1]
    plain = await moonshine.transcribe(audio)
    for end_s in (0.64, 1.28, 1.92, 2.56):
        asr.draft("item_1", audio[: int(end_s * RATE)], None)
        await asyncio.sleep(0.5)  # each take done before the next (~0.1 s each)
    assert asr._draft_of("item_1") is not None and asr._draft_of("item_2") is None
    latest = asr._draft_of("item_1")
    assert latest is not None and len(latest.tokens) >= len(plain.tokens) // 2, latest.text
    result = await asr.transcribe("item_1", audio, language="en", cancel=CancelToken())
    assert result.tokens == plain.tokens
    await asr.aclose()


class RecordingRecognizer:
    """Stands in for the shared recognizer: records each call's draft and audio length, and
    takes ``seconds`` a call (cancellable)."""

    def __init__(self, checks_drafts: bool, seconds: float = 0.0) -> None:
        self.info = EngineInfo("recording", "recording", RATE, languages=("en",), checks_drafts=checks_drafts)
        self.seconds = seconds
        self.calls: list[tuple[int, str | None, str | None]] = []  # samples, language, draft text
        self.prompts: list[str | None] = []
        self.cancelled = 0

    async def transcribe(
        self,
        audio: AudioF32,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        draft: Transcript | None = None,
    ) -> Transcript:
        self.calls.append((audio.size, language, draft.text if draft else None))
        self.prompts.append(prompt)
        waited, seconds = 0.0, self.seconds
        while waited < seconds:
            if cancel is not None and cancel.cancelled:
                self.cancelled += 1
                cancel.raise_if_cancelled()
            await asyncio.sleep(0.01)
            waited += 0.01
        return Transcript(f"{audio.size} samples", "en", audio.size / RATE, tokens=(audio.size,))


async def test_no_more_drafts_once_a_take_comes_back_without_tokens(moonshine: MoonshineASR) -> None:
    """Past Moonshine's one window (20 s) a take keeps no tokens: drafting that item stops."""
    asr = SessionASR(moonshine)
    long = read_clip("en_philosophy_22s.wav", RATE)
    asr.draft("item_1", long, None)
    assert asr._job is not None
    await asyncio.wait_for(asr._job[0], 10.0)
    assert asr._draft_of("item_1") is None
    asr.draft("item_1", long, None)
    assert asr._job is not None and asr._job[0].done()  # no new take
    asr.draft("item_2", long[: 3 * RATE], None)  # another item drafts again
    assert asr._job is not None and not asr._job[0].done()
    await asr.aclose()


async def test_a_recognizer_that_cannot_check_drafts_gets_none() -> None:
    recognizer = RecordingRecognizer(checks_drafts=False)
    asr = SessionASR(recognizer)  # type: ignore[arg-type]
    asr.draft("item_1", np.zeros(RATE, dtype=np.float32), None)
    await asyncio.sleep(0.05)
    assert recognizer.calls == []
    await asr.aclose()


async def test_one_draft_at_a_time_and_the_transcript_stops_one_under_way() -> None:
    recognizer = RecordingRecognizer(checks_drafts=True, seconds=0.05)
    asr = SessionASR(recognizer)  # type: ignore[arg-type]
    asr.draft("item_1", np.zeros(RATE, dtype=np.float32), None)
    await asyncio.sleep(0.2)
    assert recognizer.calls == [(RATE, "en", None)]  # in the recognizer's language: no language check
    recognizer.seconds = 5.0
    asr.draft("item_1", np.zeros(2 * RATE, dtype=np.float32), "en")
    asr.draft("item_1", np.zeros(3 * RATE, dtype=np.float32), "en")  # one is under way: skipped
    await asyncio.sleep(0.05)
    assert [c[0] for c in recognizer.calls] == [RATE, 2 * RATE]
    assert recognizer.calls[1][2] == f"{RATE} samples"  # each take drafts from the one before
    recognizer.seconds = 0.0
    result = await asyncio.wait_for(
        asr.transcribe("item_1", np.zeros(4 * RATE, dtype=np.float32), language="en", cancel=CancelToken()), 1.0
    )
    await asyncio.sleep(0.05)
    assert recognizer.cancelled == 1  # the draft under way gave way
    assert recognizer.calls[-1] == (4 * RATE, "en", f"{RATE} samples") and result.tokens == (4 * RATE,)
    assert asr._draft_of("item_1") == result  # the transcript is the next take's draft


async def test_closing_stops_a_draft_under_way_and_leaves_no_task() -> None:
    recognizer = RecordingRecognizer(checks_drafts=True, seconds=5.0)
    asr = SessionASR(recognizer)  # type: ignore[arg-type]
    asr.draft("item_1", np.zeros(RATE, dtype=np.float32), None)
    await asyncio.sleep(0.05)
    assert [t for t in asyncio.all_tasks() if t.get_name() == "draft-item_1"]
    await asyncio.wait_for(asr.aclose(), 1.0)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "draft-item_1"]


class LanguageLooks:
    """Records the language ID's looks: ``screen`` (a draft's) and ``identify`` (the check at a pause)."""

    def __init__(self, identifier: SpokenLanguageID, monkeypatch: pytest.MonkeyPatch) -> None:
        self.looks: list[str] = []
        for name in ("screen", "identify"):
            real = getattr(identifier, name)
            monkeypatch.setattr(identifier, name, self._recording(name, real))

    def _recording(self, name: str, real: Any) -> Any:
        async def recorded(audio: AudioF32, **kwargs: Any) -> Any:
            self.looks.append(name)
            return await real(audio, **kwargs)

        return recorded

    def since(self) -> list[str]:
        looks, self.looks = self.looks, []
        return looks


@pytest.fixture
def guarded(moonshine: MoonshineASR, identifier: SpokenLanguageID) -> SessionASR:
    """A session's recognizer behind the language check, as the embedded default builds it."""
    return SessionASR(LanguageCheckedASR(moonshine, identifier))


async def drafted(asr: SessionASR, item_id: str, audio: AudioF32, language: str | None = None) -> None:
    """Drafts of ``item_id`` as its speaker talks: every 0.8 s of ``audio``, each done before the
    next (the first too short to screen, the second screened: the Dublin question's first 1.6 s
    scored P(en) 0.98 on the Xeon with AMX, against 0.90 for 1.28 s)."""
    for end_s in np.arange(0.8, audio.size / RATE - 0.2, 0.8):
        asr.draft(item_id, audio[: int(end_s * RATE)], language)
        assert asr._job is not None
        await asyncio.wait_for(asr._job[0], 10.0)


async def test_a_turn_screened_english_while_spoken_is_not_checked_again_at_the_pause(
    moonshine: MoonshineASR, identifier: SpokenLanguageID, guarded: SessionASR, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks, asr = LanguageLooks(identifier, monkeypatch), guarded
    audio = dublin_question_alone(RATE)
    plain = await moonshine.transcribe(audio)
    await drafted(asr, "item_1", audio)
    assert looks.since() == ["screen"]  # one screen a turn, on its first draft of 1.2 s or more
    result = await asr.transcribe("item_1", audio, language=None, cancel=CancelToken())
    assert looks.since() == []  # no check at the pause
    assert result.text == plain.text and (result.language_probability or 0.0) >= SURE_ENGLISH
    # One sure turn is not yet trust: the next turn is screened again, and once sure not checked.
    await drafted(asr, "item_2", audio)
    assert looks.since() == ["screen"]
    await asr.transcribe("item_2", audio, language=None, cancel=CancelToken())
    assert looks.since() == []
    await drafted(asr, "item_3", audio)  # two sure turns: trusted, no more looks at all
    await asr.transcribe("item_3", audio, language=None, cancel=CancelToken())
    assert looks.since() == []
    await asr.aclose()


async def test_mandarin_screened_while_spoken_is_still_checked_and_refused_at_the_pause(
    identifier: SpokenLanguageID, guarded: SessionASR, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks, asr = LanguageLooks(identifier, monkeypatch), guarded
    audio = read_clip("zh_asr_example.wav", RATE)
    await drafted(asr, "item_1", audio)
    assert looks.since() == ["screen"]  # which did not find it English
    with pytest.raises(UnsupportedLanguageError):
        await asr.transcribe("item_1", audio, language=None, cancel=CancelToken())
    assert looks.since() == ["identify"]
    await asr.aclose()


async def test_a_session_that_names_its_language_gets_no_screens(
    identifier: SpokenLanguageID, guarded: SessionASR, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks, asr = LanguageLooks(identifier, monkeypatch), guarded
    audio = dublin_question_alone(RATE)
    await drafted(asr, "item_1", audio, "en")  # the second draft long enough to screen, were it not named
    await asr.transcribe("item_1", audio, language="en", cancel=CancelToken())
    assert looks.since() == []
    await asr.aclose()


async def test_no_screens_where_the_check_itself_is_skipped_for_another_sample_rate(
    moonshine: MoonshineASR, identifier: SpokenLanguageID, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guard passes speech on unchecked when its language ID hears another rate than the
    # recognizer: a screen could then decide nothing, so none is run.
    looks = LanguageLooks(identifier, monkeypatch)
    monkeypatch.setattr(identifier, "sample_rate", RATE // 2)
    asr = SessionASR(LanguageCheckedASR(moonshine, identifier))
    audio = dublin_question_alone(RATE)
    await drafted(asr, "item_1", audio)
    await asr.transcribe("item_1", audio, language=None, cancel=CancelToken())
    assert looks.since() == []
    await asr.aclose()


async def test_a_draft_is_told_sure_of_its_language_only_when_it_is(
    moonshine: MoonshineASR, identifier: SpokenLanguageID
) -> None:
    """A draft is taken in the recognizer's language (English) whatever is spoken; the session
    may show its words (captions) only when that is the language the turn will be reported in."""
    told: list[tuple[str, bool]] = []

    def tell(item_id: str, _text: str, sure: bool) -> None:
        told.append((item_id, sure))

    asr = SessionASR(LanguageCheckedASR(moonshine, identifier), on_draft=tell)
    await drafted(asr, "item_1", dublin_question_alone(RATE))
    assert told[0] == ("item_1", False)  # 0.8 s: too short to screen
    assert told[-1] == ("item_1", True)  # screened English beyond doubt
    told.clear()
    await drafted(asr, "item_2", read_clip("zh_asr_example.wav", RATE))
    assert not [item for item, sure in told if sure]  # Mandarin: its English drafts are never sure
    await asr.aclose()
    unchecked = SessionASR(moonshine, on_draft=tell)
    told.clear()
    await drafted(unchecked, "item_3", dublin_question_alone(RATE))
    assert told and all(sure for _, sure in told)  # no language check: nor will the transcript have one
    await unchecked.aclose()


async def test_the_sessions_prompt_reaches_the_recognizer_for_its_transcripts_not_drafts() -> None:
    recognizer = RecordingRecognizer(checks_drafts=True)
    asr = SessionASR(recognizer)  # type: ignore[arg-type]
    asr.draft("item_1", np.zeros(RATE, dtype=np.float32), "en")
    await asyncio.sleep(0.05)
    audio = np.zeros(2 * RATE, dtype=np.float32)
    await asr.transcribe("item_1", audio, language="en", cancel=CancelToken(), prompt="Piketty, Dublin")
    assert recognizer.prompts == [None, "Piketty, Dublin"]
    await asr.aclose()
