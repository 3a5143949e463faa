"""``asr.engine: moonshine`` behind the real server: transcriptions with the official openai SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer
from tests.support import DATA, REFERENCES, word_error_rate


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    # Transcription needs no LLM: an external one (never contacted here) keeps llama.cpp from starting.
    no_llm = {"engine": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "unused"}
    config = write_config(tmp_path_factory.mktemp("moonshine"), {"asr": {"engine": "moonshine"}, "llm": no_llm})
    async with in_process_server(config) as live:
        yield live


def sdk(server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


async def test_a_question_is_transcribed_and_the_model_is_listed(server: LiveServer) -> None:
    client = sdk(server)
    with (DATA / "en_dublin_q.wav").open("rb") as wav:
        result = await client.audio.transcriptions.create(model="whisper-1", file=wav, response_format="verbose_json")
    assert word_error_rate(REFERENCES["en_dublin_q.wav"], result.text) <= 0.3, result.text
    assert result.segments is not None and len(result.segments) == 1
    assert [m.id async for m in client.models.list()].count("moonshine-base-en") == 1


async def test_a_stream_gives_one_delta_per_window(server: LiveServer) -> None:
    with (DATA / "en_philosophy_22s.wav").open("rb") as wav:  # 22.2 s: two Moonshine windows of at most 20 s
        stream = await sdk(server).audio.transcriptions.create(model="whisper-1", file=wav, stream=True)
        events = [event async for event in stream]
    assert [e.type for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    done = events[-1].text  # type: ignore[union-attr]
    assert "".join(e.delta for e in events[:-1]).strip() == done  # type: ignore[union-attr]
    assert word_error_rate(REFERENCES["en_philosophy_22s.wav"], done) <= 0.2, done
