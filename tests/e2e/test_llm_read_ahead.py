"""The embedded llama.cpp server reads a draft's prompt ahead (pipeline.llm_prefetch.read_ahead) on
the conversation's own slot: the reply that follows there finds all but the draft's missing words in
llama.cpp's cache (real llama-server, real model; llama.cpp's own counts, ``usage``); and a question
spoken over the official SDK has its drafts read ahead while it is spoken, only while its session
is alone on the server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from cosyagent.engines.base import ChatMessage
from cosyagent.pipeline.llm_prefetch import ChatRequest, PrefetchingLLM
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import spoken_reply
from tests.support import read_clip

QUESTION = "How do I get to Dublin from Cork by train?"
DRAFT = "How do I get to Dublin from Cork by"  # the turn's draft a moment before it ended


def _conversation(question: str) -> list[ChatMessage]:
    return [
        {"role": "system", "content": "Answer in one short sentence, Cork to Dublin."},
        {"role": "user", "content": question},
    ]


async def _tasks(live_server: LiveServer) -> dict[int, int]:
    return {int(slot["id"]): int(slot.get("id_task", -1)) for slot in await live_server.llama_slots()}


async def _read_since(live_server: LiveServer, before: dict[int, int]) -> list[int]:
    """The slots that have taken a task since ``before`` and finished it."""
    slots = await live_server.llama_slots()
    return [
        int(slot["id"])
        for slot in slots
        if int(slot.get("id_task", -1)) != before[int(slot["id"])] and not slot["is_processing"]
    ]


async def _usage_on(live_server: LiveServer, slot: int, question: str) -> dict[str, Any]:
    """llama.cpp's token counts for ``question`` asked on ``slot``."""
    server = live_server.runtime.llm_server
    assert server is not None
    body = {"messages": _conversation(question), "max_tokens": 4, "id_slot": slot}
    async with httpx.AsyncClient(timeout=60.0) as http:
        response = await http.post(f"{server.base_url}/chat/completions", json=body)
    response.raise_for_status()
    usage: dict[str, Any] = response.json()["usage"]
    return usage


async def test_the_reply_reads_only_what_the_draft_read_ahead_did_not(live_server: LiveServer) -> None:
    runtime = live_server.runtime
    assert runtime.llm_slots is not None  # the default embedded server: a slot per conversation
    before = await _tasks(live_server)
    llm = PrefetchingLLM(runtime.session_engines().llm)
    llm.read_ahead("draft-1", ChatRequest(_conversation(DRAFT)))
    async with asyncio.timeout(30):  # until llama.cpp has read it: a slot with a new task, done
        while not (read_on := await _read_since(live_server, before)):
            await asyncio.sleep(0.02)
    (slot,) = read_on  # the conversation's slot
    read = await _usage_on(live_server, slot, QUESTION)
    assert read["prompt_tokens"] >= 25, read  # the instructions, the question and the chat template
    uncached = read["prompt_tokens"] - read["prompt_tokens_details"]["cached_tokens"]
    assert uncached <= 8, read  # "train?" and the turn's end

    other = next(index for index in before if index != slot)  # a slot that read no draft of it
    unread = await _usage_on(live_server, other, QUESTION)
    assert unread["prompt_tokens"] - unread["prompt_tokens_details"]["cached_tokens"] >= 15, unread
    await llm.aclose()


async def spoken_question(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, others: int
) -> tuple[Any, list[Any]]:
    """The wealth-tax question spoken in real time over the SDK while ``others`` more sessions are
    connected (quiet); the session's events, and (when, words) of each draft read ahead."""
    reads: list[tuple[float, str]] = []
    real = PrefetchingLLM.read_ahead

    def recorded(self: PrefetchingLLM, key: str, request: ChatRequest) -> None:
        reads.append((time.monotonic(), str(request.messages[-1]["content"])))
        real(self, key, request)

    monkeypatch.setattr(PrefetchingLLM, "read_ahead", recorded)
    client = AsyncOpenAI(base_url=live_server.base_url, api_key="test-key")
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(others):
            await stack.enter_async_context(client.realtime.connect(model="cosyagent-realtime"))
        async with client.realtime.connect(model="cosyagent-realtime") as conn:
            heard = await spoken_reply(conn, read_clip("en_wealth_tax_q.wav", 24000))
    return heard, reads


async def test_a_lone_speaker_s_drafts_are_read_ahead_while_they_speak(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    (seen, speech_end), reads = await spoken_question(live_server, monkeypatch, others=0)
    (transcribed,) = seen.of_type("conversation.item.input_audio_transcription.completed")
    assert reads, "no draft was read ahead"  # 3.8 s of speech on an idle server: drafts every 0.64 s
    assert all(when < speech_end + 0.3 for when, _ in reads)  # while the question was spoken
    first_words = transcribed.transcript.lower().split()[:2]
    assert reads[-1][1].lower().split()[:2] == first_words, (reads, transcribed.transcript)


async def test_nothing_is_read_ahead_while_another_session_is_on_the_server(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measured: four sessions' reads, each speaker's every draft, cost more than they saved.
    (seen, _), reads = await spoken_question(live_server, monkeypatch, others=1)
    assert seen.of_type("conversation.item.input_audio_transcription.completed")  # the turn was heard
    assert reads == []
