"""How the one speak path (the agent's replies, /v1/audio/speech) feeds an engine: clause by clause,
or the whole text to a bi-streaming engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np

from cosyagent.engines.base import AudioF32, CancelToken, ChatFinished, EngineInfo
from cosyagent.pipeline.reply import AudioChunk, ReplyIncomplete, ReplyRequest, SpokenText, TextDelta, stream_reply
from cosyagent.pipeline.speak import SpokenChunk, clauses_of, speak
from cosyagent.pipeline.voice_language import in_the_voice_language, speakable_opening

TEXT = "Good morning, and welcome to the station. The next train leaves from platform four in ten minutes."


class ClauseEngine:
    name = "clauses"
    sample_rate = 24_000
    info = EngineInfo(name, "clauses-1", sample_rate)
    loaded = True
    queue_depth = 0

    def __init__(self) -> None:
        self.calls: list[str] = []

    def load(self) -> None: ...

    def voices(self) -> list[str]:
        return ["v"]

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        self.calls.append(text)
        yield np.zeros(len(text), dtype=np.float32)

    def close(self) -> None: ...


class StreamingEngine(ClauseEngine):
    info = EngineInfo("streaming", "streaming-1", 24_000, streams_text=True)

    async def synthesize_stream(
        self, text: AsyncIterator[str], *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        pieces = [piece async for piece in text]
        self.calls.append("|".join(pieces))
        for piece in pieces:
            yield np.zeros(len(piece), dtype=np.float32)


def test_the_first_clause_is_short() -> None:
    assert clauses_of(TEXT) == [
        "Good morning,",
        "and welcome to the station.",
        "The next train leaves from platform four in ten minutes.",
    ]
    assert clauses_of("Yes") == ["Yes"]


async def test_a_clause_engine_gets_one_call_per_clause() -> None:
    engine = ClauseEngine()
    chunks = [c async for c in _audio(speak(engine, TEXT, voice="v", speed=1.0, cancel=CancelToken()))]
    assert engine.calls == clauses_of(TEXT) and len(chunks) == 3


async def test_a_bi_streaming_engine_gets_the_whole_text() -> None:
    engine = StreamingEngine()
    chunks = [c async for c in _audio(speak(engine, TEXT, voice="v", speed=1.0, cancel=CancelToken()))]
    assert engine.calls == [TEXT] and sum(c.size for c in chunks) == len(TEXT)


async def _audio(spoken: AsyncIterator[SpokenChunk]) -> AsyncIterator[AudioF32]:
    async for chunk in spoken:
        if chunk.samples.size:
            yield chunk.samples


async def _deltas(text: str) -> AsyncIterator[str]:
    for word in text.split(" "):
        yield word + " "


async def test_streamed_text_is_spoken_clause_by_clause_as_it_comes() -> None:
    engine = ClauseEngine()
    told: list[str] = []
    spoken = [c async for c in speak(engine, _deltas(TEXT), voice="v", on_clause=told.append)]
    assert engine.calls == told == clauses_of(TEXT)
    assert [c.text for c in spoken] == clauses_of(TEXT)  # each clause's first chunk carries its text


async def _slow_deltas(text: str, every_s: float = 0.005) -> AsyncIterator[str]:
    """As an LLM under load writes: the words come while earlier clauses are spoken."""
    for word in text.split(" "):
        await asyncio.sleep(every_s)
        yield word + " "


class SlowClauseEngine(ClauseEngine):
    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        await asyncio.sleep(0.3)
        async for samples in super().synthesize(text, voice=voice, speed=speed, cancel=cancel):
            yield samples


async def test_a_reply_about_to_run_dry_speaks_the_words_it_has() -> None:
    """With plenty of audio still to hear, clauses wait for their sentence; with none, each
    later clause goes as soon as it has two words, the same words in the same order."""
    plenty, dry = ClauseEngine(), ClauseEngine()
    [c async for c in speak(plenty, _slow_deltas(TEXT), voice="v", audio_ahead_s=lambda: 5.0)]
    [c async for c in speak(dry, _slow_deltas(TEXT), voice="v", audio_ahead_s=lambda: 0.0)]
    assert plenty.calls == clauses_of(TEXT)
    assert dry.calls[0] == clauses_of(TEXT)[0] and len(dry.calls) > len(clauses_of(TEXT))
    hurried = [call for call in dry.calls[1:] if not call.endswith(".")]  # a sentence's end may be one word
    assert hurried and all(len(call.split()) >= 2 for call in hurried)
    assert " ".join(dry.calls) == " ".join(clauses_of(TEXT))


async def test_no_clause_is_hurried_while_the_one_before_is_still_being_synthesized() -> None:
    engine = SlowClauseEngine()  # the whole text is written during the first clause's 0.3 s
    [c async for c in speak(engine, _slow_deltas(TEXT), voice="v", audio_ahead_s=lambda: 0.0)]
    assert engine.calls == clauses_of(TEXT)


async def test_a_bi_streaming_engine_says_which_text_each_chunk_completes() -> None:
    engine = StreamingEngine()
    spoken = [c async for c in speak(engine, _deltas(TEXT), voice="v")]
    assert " ".join(c.text for c in spoken if c.text) == " ".join(clauses_of(TEXT))


async def test_closing_the_stream_fires_the_cancel_token() -> None:
    cancel = CancelToken()
    spoken = speak(ClauseEngine(), TEXT, voice="v", cancel=cancel)
    await anext(spoken)
    await spoken.aclose()  # type: ignore[attr-defined]
    assert cancel.cancelled


class EnglishOnlyEngine(ClauseEngine):
    info = EngineInfo("english", "english-1", 24_000, languages=("en",))


class RecordingLLM:
    """Answers each request with the next of ``answers`` (the last one again when they run out),
    each word a token: past ``max_tokens`` words it stops with ``length``, as chat-completions does."""

    info = EngineInfo("recording", "recording-1")

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers) or ["Hello there."]
        self.seen: list[list[dict[str, object]]] = []
        self.closed = 0

    async def stream_chat_events(
        self, messages: list[dict[str, object]], *, max_tokens: int | None = None, **_: object
    ) -> AsyncIterator[str | ChatFinished]:
        self.seen.append(list(messages))
        words = self.answers[min(len(self.seen), len(self.answers)) - 1].split(" ")
        try:
            for word in words[:max_tokens]:
                yield word + " "
            yield ChatFinished("length" if max_tokens is not None and len(words) > max_tokens else "stop")
        finally:
            self.closed += 1


async def test_an_english_only_voice_asks_the_llm_for_english_answers() -> None:
    llm = RecordingLLM()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    request = ReplyRequest(messages=messages, voice="v")
    assert [e async for e in stream_reply(request, llm, EnglishOnlyEngine())]  # type: ignore[arg-type]
    system = llm.seen[0][0]["content"]
    assert system == "Be brief.\nAlways answer in English."
    assert llm.seen[0][1:] == messages[1:]
    # A voice of several languages, or a text-only reply, leaves the instructions alone.
    for tts, audio in ((ClauseEngine(), True), (EnglishOnlyEngine(), False)):
        llm.seen.clear()
        request = ReplyRequest(messages=messages, voice="v", audio=audio)
        assert [e async for e in stream_reply(request, llm, tts)]  # type: ignore[arg-type]
        assert llm.seen[0] == messages


def test_without_instructions_the_language_rule_is_the_system_message() -> None:
    user = {"role": "user", "content": "Hi"}
    assert in_the_voice_language([user], ("en",)) == [
        {"role": "system", "content": "Always answer in English."},
        user,
    ]


async def test_a_reply_opening_in_chinese_is_asked_for_again_before_an_english_voice_speaks_it() -> None:
    llm = RecordingLLM("巴黎是法国的首都 。 Paris.", "Paris is the capital of France.")
    tts = EnglishOnlyEngine()
    request = ReplyRequest(messages=[{"role": "user", "content": "What is the capital of France?"}], voice="v")
    chunks = [e async for e in stream_reply(request, llm, tts)]  # type: ignore[arg-type]
    assert " ".join(tts.calls) == "Paris is the capital of France."  # nothing of the first answer spoken
    assert len(chunks) >= 1 and llm.closed == 2  # the first stream closed, not read to its end
    assert llm.seen[1][-1] == {"role": "system", "content": "Reply in English only, never in Chinese."}
    assert llm.seen[1][:-1] == llm.seen[0]
    assert chunks[-1] == SpokenText("Paris is the capital of France. ")  # the answer spoken, not the refused one


async def test_only_the_opening_is_checked_and_only_once() -> None:
    async def text(*pieces: str) -> AsyncIterator[str]:
        for piece in pieces:
            yield piece

    def never() -> AsyncIterator[str]:
        raise AssertionError("an English opening is not asked for again")

    english = [d async for d in speakable_opening(text("Paris is ", "the capital, 巴黎.", " More."), never)]
    assert "".join(english) == "Paris is the capital, "  # later Chinese: the reply ends before it
    held = [d async for d in speakable_opening(text("Paris is the capital 巴黎", " more."), never)]
    assert "".join(held) == "Paris is the capital "  # also inside the opening's own deltas
    assert [d async for d in speakable_opening(text("Yes."), never)] == ["Yes."]  # short, held whole
    twice = [d async for d in speakable_opening(text("巴黎"), lambda: text("还是", "巴黎"))]
    assert "".join(twice) == "还是巴黎"  # a second Chinese answer is passed on: the voice refuses it
    later = [d async for d in speakable_opening(text("巴黎"), lambda: text("The capital is ", "巴黎, Paris."))]
    assert "".join(later) == "The capital is "  # the second answer, too, ends where it turns to Chinese


async def test_a_scripted_reply_is_spoken_or_written_as_given_without_asking_the_llm() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    for audio in (True, False):
        llm, tts = RecordingLLM("Something else entirely."), ClauseEngine()
        request = ReplyRequest(messages=messages, voice="v", audio=audio, script="Are you still there?")
        events = [e async for e in stream_reply(request, llm, tts)]  # type: ignore[arg-type]
        assert llm.seen == []
        if audio:
            assert " ".join(tts.calls) == "Are you still there?"
            assert events[-1] == SpokenText("Are you still there?")  # what the LLM is shown next turn
        else:
            assert events == [TextDelta("Are you still there?")]


async def test_a_reply_spoken_to_its_end_closes_with_the_llm_s_own_text() -> None:
    """The clauses are spoken without markup or line breaks; the last event hands back the LLM's
    text as it came, which is what the conversation shows the LLM next turn (its cached prefix)."""
    answer = "Two ways:\n1. Take the **bus**.\n2. Walk."
    tts = ClauseEngine()
    request = ReplyRequest(messages=[{"role": "user", "content": "How do I get there?"}], voice="v")
    events = [e async for e in stream_reply(request, RecordingLLM(answer), tts)]  # type: ignore[arg-type]
    clauses = [e.clause for e in events if isinstance(e, AudioChunk) and e.clause]
    assert " ".join(clauses) == "Two ways: 1. Take the bus. 2. Walk."
    assert events[-1] == SpokenText(answer + " ")  # RecordingLLM sends each word with a space
    assert sum(isinstance(e, SpokenText) for e in events) == 1


async def test_a_looping_reply_is_spoken_up_to_its_third_saying_and_the_llm_stops() -> None:
    loop = "Bees make honey, honey bees, honey bees, honey bees, honey bees, honey bees."
    for audio in (True, False):
        llm, tts = RecordingLLM(loop), ClauseEngine()
        request = ReplyRequest(messages=[{"role": "user", "content": "What do bees make?"}], voice="v", audio=audio)
        events = [e async for e in stream_reply(request, llm, tts)]  # type: ignore[arg-type]
        assert llm.closed == 1
        if audio:
            clauses = [e.clause for e in events if isinstance(e, AudioChunk) and e.clause]
            assert " ".join(clauses) == "Bees make honey, honey bees, honey bees, honey bees,"
            assert events[-1] == SpokenText("Bees make honey, honey bees, honey bees, honey bees,")
        else:
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == (
                "Bees make honey, honey bees, honey bees, honey bees,"
            )


async def test_a_reply_cut_at_the_token_cap_ends_incomplete_after_all_it_said() -> None:
    answer = "First take the bus to the station, then walk two blocks north to the square."
    said = "First take the bus to the station, then "  # eight words: the cap
    for audio in (True, False):
        tts = ClauseEngine()
        request = ReplyRequest(messages=[{"role": "user", "content": "Route?"}], voice="v", audio=audio, max_tokens=8)
        events = [e async for e in stream_reply(request, RecordingLLM(answer), tts)]  # type: ignore[arg-type]
        assert events[-1] == ReplyIncomplete("max_output_tokens")
        if audio:
            assert events[-2] == SpokenText(said)
            assert " ".join(tts.calls) == said.strip()  # every word the LLM gave was spoken
        else:
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == said
        # Under the cap, or ended by the loop guard (its stream closed early): complete.
        for ended, cap in ((answer, 30), ("Bees make honey, honey bees, honey bees, honey bees, honey bees.", 30)):
            request = replace(request, max_tokens=cap)
            events = [e async for e in stream_reply(request, RecordingLLM(ended), tts)]  # type: ignore[arg-type]
            assert not any(isinstance(e, ReplyIncomplete) for e in events)


class SilenceFirstEngine(ClauseEngine):
    """Each clause starts with 60 ms of silence before its voice, as a Piper clause does."""

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> AsyncIterator[AudioF32]:
        self.calls.append(text)
        rate = self.sample_rate
        tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(rate // 5) / rate)
        yield np.concatenate([np.zeros(rate * 60 // 1000), tone]).astype(np.float32)


async def test_the_first_audio_starts_10_ms_before_its_voice_and_later_clauses_keep_their_pauses() -> None:
    engine = SilenceFirstEngine()
    chunks = [c async for c in _audio(speak(engine, TEXT, voice="v", speed=1.0, cancel=CancelToken()))]
    rate = engine.sample_rate
    assert len(chunks) == 3
    assert chunks[0].size == rate * 10 // 1000 + rate // 5  # 10 ms of its 60 ms of silence, then the voice
    assert not chunks[0][: rate * 10 // 1000].any() and chunks[0][rate * 10 // 1000 + 1] != 0
    assert [c.size for c in chunks[1:]] == [rate * 60 // 1000 + rate // 5] * 2  # the pauses between clauses


async def test_audio_that_is_silence_throughout_is_not_cut() -> None:
    engine = ClauseEngine()  # zeros only
    chunks = [c async for c in _audio(speak(engine, "Hmm.", voice="v", speed=1.0, cancel=CancelToken()))]
    assert [c.size for c in chunks] == [len("Hmm.")]
