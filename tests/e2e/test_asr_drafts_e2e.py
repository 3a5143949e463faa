"""Drafts of the transcript while the speaker talks, end to end: the official openai SDK over a real
socket speaks a real question in real time to an idle server (real VAD, real Moonshine,
fake_chat_llm on 127.0.0.1); the recognizer is asked for drafts of the utterance so far while the
question is spoken, each giving way to other work, and the turn's transcript is checked against
the latest of them and is the right one. A new speaker's drafts are screened for their language
once, and a turn found English while it was spoken is not checked again at the pause."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from openai import AsyncOpenAI

from cosyagent.engines.base import AudioF32, Transcript
from cosyagent.engines.language_guard import LanguageCheckedASR
from cosyagent.engines.scheduling import gives_way
from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.realtime_client import Transcript as Seen
from tests.e2e.realtime_client import spoken_reply
from tests.e2e.test_realtime_tools import fake_llm
from tests.fakes.fake_chat_llm import MODEL, FakeChatLLM, Reply
from tests.support import dublin_question_alone, read_clip

__all__ = ["fake_llm"]  # fake_chat_llm on 127.0.0.1, one per module (test_realtime_tools)


async def spoken_turn(
    fake_llm: tuple[FakeChatLLM, int], tmp_path: Any, audio: AudioF32, instrument: Callable[[Any], None]
) -> tuple[Seen, float]:
    """``audio`` (24 kHz) spoken in real time by the SDK to a fresh in-process server whose runtime
    ``instrument`` wrapped first; the events seen until the reply is done, and when speech ended."""
    fake, port = fake_llm
    fake.replies[:] = [Reply(text="Nobody yet.")] * 4
    llm = {"engine": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": MODEL}
    async with in_process_server(write_config(tmp_path, {"llm": llm})) as server:
        instrument(server.runtime)
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key")
        async with client.realtime.connect(model="cosyagent-realtime") as conn:
            return await spoken_reply(conn, audio)


async def test_the_turns_transcript_checks_drafts_taken_while_the_question_was_spoken(
    fake_llm: tuple[FakeChatLLM, int], tmp_path: Any
) -> None:
    calls: list[
        tuple[float, float, bool, Transcript | None, Transcript]
    ] = []  # when, seconds, draft?, its draft, result

    def instrument(runtime: Any) -> None:
        asr = runtime.asr
        assert asr.info.checks_drafts  # the embedded default: Moonshine
        real = asr.transcribe

        async def recorded(audio: AudioF32, **kwargs: Any) -> Transcript:
            drafting = gives_way()
            result = await real(audio, **kwargs)
            calls.append((time.monotonic(), audio.size / 16000, drafting, kwargs.get("draft"), result))
            return result

        asr.transcribe = recorded

    seen, speech_end = await spoken_turn(fake_llm, tmp_path, read_clip("en_wealth_tax_q.wav", 24000), instrument)
    (transcribed,) = seen.of_type("conversation.item.input_audio_transcription.completed")
    assert "wealth tax" in transcribed.transcript.lower(), transcribed.transcript
    drafts = [c for c in calls if c[2]]
    reported = [c for c in calls if not c[2] and c[4].text == transcribed.transcript]
    assert len(drafts) >= 3, calls  # 3.8 s of speech: a take every 0.64 s, each in ~0.1 s on an idle server
    assert all(when < speech_end + 0.3 for when, *_ in drafts)  # taken while the question was spoken
    assert [seconds for _, seconds, *_ in drafts] == sorted(seconds for _, seconds, *_ in drafts)
    assert reported, calls
    _, _, _, draft, result = reported[-1]
    assert draft is not None and draft.tokens and draft in [c[4] for c in calls]
    overlap = 0
    while overlap < min(len(draft.tokens), len(result.tokens)) and draft.tokens[overlap] == result.tokens[overlap]:
        overlap += 1
    assert overlap >= len(result.tokens) // 2, (draft.text, result.text)  # most of its words were drafted


async def test_a_new_speakers_question_is_screened_english_while_spoken_and_not_checked_at_the_pause(
    fake_llm: tuple[FakeChatLLM, int], tmp_path: Any
) -> None:
    looks: list[tuple[str, float]] = []  # which look, when

    def instrument(runtime: Any) -> None:
        asr = runtime.asr
        assert isinstance(asr, LanguageCheckedASR)  # the embedded default checks a new speaker's language
        for name in ("screen", "identify"):
            real = getattr(asr.identifier, name)

            async def recorded(audio: AudioF32, *, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
                looks.append((_name, time.monotonic()))
                return await _real(audio, **kwargs)

            setattr(asr.identifier, name, recorded)

    seen, speech_end = await spoken_turn(fake_llm, tmp_path, dublin_question_alone(24000), instrument)
    (transcribed,) = seen.of_type("conversation.item.input_audio_transcription.completed")
    assert "dublin" in transcribed.transcript.lower(), transcribed.transcript
    assert [name for name, _ in looks] == ["screen"], looks  # one screen, and no check at the pause
    assert looks[0][1] < speech_end  # screened while the question was spoken
