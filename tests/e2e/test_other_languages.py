"""Speech the embedded English-only recognizer cannot transcribe (real Mandarin) is refused with
a precise error, in a Realtime session and over HTTP, instead of coming back as invented English."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI, BadRequestError

from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import Transcript, collect, said_to_its_end, stream_pcm24
from tests.support import DATA, pcm16, read_clip


def client(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)


async def test_mandarin_turn_is_refused_and_the_next_english_one_answered(live_server: LiveServer) -> None:
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "Answer in one short sentence."})
        seen = Transcript()
        await stream_pcm24(conn, read_clip("zh_asr_example.wav", 24000))
        await collect(conn, seen, until="conversation.item.input_audio_transcription.failed", timeout=60)
        # No reply is made of a refused turn (the server would otherwise start one at once).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(collect(conn, seen, until="response.created"), timeout=2.0)
        question = read_clip("en_wealth_tax_q.wav", 24000)[: int(3.5 * 24000)]  # the question alone
        await stream_pcm24(conn, question)
        await collect(conn, seen, until="response.done", timeout=90)

    failed = seen.of_type("conversation.item.input_audio_transcription.failed")
    assert failed[0].error.code == "unsupported_language" and failed[0].error.type == "invalid_request_error"
    assert "Chinese" in failed[0].error.message and "English only" in failed[0].error.message
    (transcribed,) = seen.of_type("conversation.item.input_audio_transcription.completed")
    assert "wealth tax" in transcribed.transcript.lower()
    (done,) = seen.of_type("response.done")
    assert said_to_its_end(done.response)


async def test_mandarin_upload_is_refused_over_http(live_server: LiveServer) -> None:
    sdk = client(live_server)
    with (DATA / "zh_sample_6s.wav").open("rb") as wav, pytest.raises(BadRequestError) as refused:
        await sdk.audio.transcriptions.create(model="whisper-1", file=wav)
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["code"] == "unsupported_language" and error["param"] == "file"
    assert "Chinese" in error["message"]
    # Naming the language skips the check: the caller asked for English.
    with (DATA / "en_dublin_q.wav").open("rb") as wav:
        english = await sdk.audio.transcriptions.create(model="whisper-1", file=wav, language="en")
    assert "dublin" in english.text.lower()
    async with httpx.AsyncClient(timeout=30) as http:
        health = (await http.get(f"{live_server.base_url}/health")).json()
    assert health["engines"]["asr"]["language_check"] is True


async def test_a_session_surely_english_twice_is_no_longer_checked(live_server: LiveServer) -> None:
    """The check costs ~a fifth of the recognition, so a session whose first two turns were
    English beyond doubt (P >= 0.8) is trusted: a later Mandarin turn is transcribed, as documented."""
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        seen = Transcript()
        for clip in ("en_dublin_q.wav", "en_philosophy_22s.wav", "zh_asr_example.wav"):
            audio = read_clip(clip, 24000)[: 6 * 24000]
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm16(audio)).decode())
            await conn.input_audio_buffer.commit()
            await collect(conn, seen, until=lambda e: e.type.endswith((".completed", ".failed")))
    ends = (".completed", ".failed")
    outcomes = [r.type.rsplit(".", 1)[1] for r in seen.events if r.type.endswith(ends) and "transcription" in r.type]
    assert outcomes == ["completed", "completed", "completed"]
    assert not seen.of_type("response.created")


async def test_one_turn_with_a_pause_counts_once_towards_trust(live_server: LiveServer) -> None:
    """A turn is transcribed at each pause: two transcripts, both English beyond doubt, but one
    turn. The session is not trusted yet, so the next turn, in Mandarin, is still checked."""
    question = read_clip("en_dublin_q.wav", 24000)
    gap = np.zeros(int(1.2 * 24000), dtype=np.float32)  # long enough for the pause's transcript to finish
    outcome = (
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
    )
    async with client(live_server).realtime.connect(model="cosyagent-realtime") as conn:
        detection = {"type": "server_vad", "silence_duration_ms": 2000, "create_response": False}
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}})
        seen = Transcript()
        for audio in (np.concatenate([question, gap, question]), read_clip("zh_asr_example.wav", 24000)):
            await stream_pcm24(conn, audio, trailing_silence_s=2.5)
            await collect(conn, seen, until=lambda e: e.type in outcome, timeout=60)
    english, mandarin = [r.event for r in seen.events if r.type in outcome]
    assert english.type == outcome[0] and english.transcript.lower().count("dublin") == 2  # one turn, both questions
    assert mandarin.type == outcome[1], mandarin  # checked, not transcribed as invented English
    assert mandarin.error.code == "unsupported_language"
