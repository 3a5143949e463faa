"""Every slot of the embedded llama.cpp server is warmed with the instructions at startup, as a
spoken reply sends them, so the first conversations after a start do not each evaluate the
system prompt on their first turn."""

from __future__ import annotations

import httpx

from cosyagent.engines.base import ChatMessage
from cosyagent.pipeline.voice_language import in_the_voice_language
from cosyagent.runtime.slot_warmup import spoken_instructions, warm_llm_slots
from tests.e2e.conftest import LiveServer


async def test_startup_warms_every_slot_and_a_warm_up_reaches_each_slot_once(live_server: LiveServer) -> None:
    runtime = live_server.runtime
    server = runtime.llm_server
    assert server is not None
    parallel = runtime.config.llm.parallel
    assert parallel > 1 and "llm_slots" in runtime.load_seconds  # start() warmed them
    before = await live_server.llama_slots()
    assert len(before) == parallel
    assert all("id_task" in slot for slot in before), before  # every slot has served a request

    # Unpinned, quick requests tend to land in the same free slot; pinned, each slot gets one.
    last_task = max(int(slot["id_task"]) for slot in before)
    instructions = "You are a test assistant who answers in exactly one word."
    warmed = await warm_llm_slots(server.base_url, server.model, instructions, parallel, timeout_s=60.0)
    assert warmed == parallel
    after = await live_server.llama_slots()
    assert all(int(slot["id_task"]) > last_task for slot in after), after


async def _prompt_tokens_read(base_url: str, model: str, messages: list[ChatMessage], slot: int) -> int:
    """How many prompt tokens llama-server read (not found in the slot's cache) for ``messages``."""
    body = {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0.0, "id_slot": slot}
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=60.0) as http:
        response = await http.post("/chat/completions", json=body)
    response.raise_for_status()
    return int(response.json()["timings"]["prompt_n"])


async def test_a_spoken_first_turn_finds_the_voice_language_rule_cached_too(live_server: LiveServer) -> None:
    runtime = live_server.runtime
    server = runtime.llm_server
    assert server is not None
    languages = runtime.speech.info.languages
    assert languages == ("en",)  # Piper joe: replies carry the English-only rule
    instructions = "You are a test assistant who answers in exactly one word."
    question: list[ChatMessage] = [{"role": "system", "content": instructions}, {"role": "user", "content": "Hi?"}]
    first_turn = in_the_voice_language(question, languages)  # what pipeline/reply.py sends

    await warm_llm_slots(server.base_url, server.model, instructions, 2, timeout_s=60.0)  # without the rule
    without_rule = await _prompt_tokens_read(server.base_url, server.model, first_turn, slot=0)
    spoken = spoken_instructions(instructions, languages)
    await warm_llm_slots(server.base_url, server.model, spoken, 2, timeout_s=60.0)
    with_rule = await _prompt_tokens_read(server.base_url, server.model, first_turn, slot=1)
    assert with_rule <= without_rule - 8, (with_rule, without_rule)  # the rule is ~12 tokens


async def test_a_server_that_is_not_there_costs_only_the_warm_up() -> None:
    warmed = await warm_llm_slots("http://127.0.0.1:9/v1", "none", "Be brief.", 2, timeout_s=5.0)
    assert warmed == 0
