"""llama.cpp's native llama-server (the default embedded LLM server): concurrent replies are
decoded together, both embedded GGUFs answer sanely through their own chat templates, a missing
binary says how to get it, and the llama-cpp-python fallback still serves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cosyagent.config import LLMConfig
from cosyagent.engines.base import ChatMessage, EngineUnavailableError
from cosyagent.engines.gguf_parts import QWEN25_CODER_05B_Q4KM, assemble
from cosyagent.engines.llama_server import EmbeddedLlamaServer, PythonLlamaServer
from cosyagent.engines.llm import OpenAICompatibleLLM
from cosyagent.runtime.engine_choice import build_embedded_llm

QUESTION: list[ChatMessage] = [{"role": "user", "content": "What is the capital of France?"}]
STORY: list[ChatMessage] = [{"role": "user", "content": "Tell me a story about a fox."}]


async def _timed_reply(llm: OpenAICompatibleLLM, max_tokens: int) -> tuple[float, float, str]:
    """(first token, end) as perf_counter readings, and the text."""
    first = 0.0
    text = []
    async for delta in llm.stream_chat(STORY, max_tokens=max_tokens, temperature=0.0):
        if not first:
            first = time.perf_counter()
        text.append(delta)
    return first, time.perf_counter(), "".join(text)


async def test_concurrent_replies_are_decoded_together() -> None:
    """Four replies started at once all get their first token before any of them ends: with one
    request at a time (llama_cpp.server), the second's first token came after the first's end."""
    async with EmbeddedLlamaServer(n_threads=2, n_ctx=512, parallel=4) as server:
        llm = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=60.0)
        try:
            replies = await asyncio.gather(*(_timed_reply(llm, 48) for _ in range(4)))
        finally:
            await llm.aclose()
    assert all(text.strip() for _, _, text in replies)
    last_first_token = max(first for first, _, _ in replies)
    first_end = min(end for _, end, _ in replies)
    assert last_first_token < first_end, replies


async def test_a_fifth_request_waits_for_a_free_slot_and_is_served() -> None:
    async with EmbeddedLlamaServer(n_threads=2, n_ctx=256, parallel=2) as server:
        llm = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=60.0)
        try:
            replies = await asyncio.gather(*(_timed_reply(llm, 16) for _ in range(3)))
        finally:
            await llm.aclose()
    assert all(text.strip() for _, _, text in replies)


async def test_qwen_answers_through_its_own_chat_template() -> None:
    server = EmbeddedLlamaServer(assemble(QWEN25_CODER_05B_Q4KM), n_threads=2, n_ctx=512, parallel=1)
    async with server:
        llm = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=60.0)
        try:
            assert server.model == "qwen2.5-coder-0.5b-instruct-q4_k_m"
            answer = "".join([d async for d in llm.stream_chat(QUESTION, max_tokens=32, temperature=0.0)])
        finally:
            await llm.aclose()
    assert "paris" in answer.lower(), answer
    assert "<|im_" not in answer, answer  # no template tokens leak into the text


async def test_a_missing_binary_says_how_to_build_it(tmp_path: Path) -> None:
    server = EmbeddedLlamaServer(binary=tmp_path / "llama-server")
    with pytest.raises(EngineUnavailableError, match="make install"):
        await server.start()
    assert server.pid is None and not server.running


async def test_the_python_fallback_is_selectable_and_serves() -> None:
    server = build_embedded_llm(LLMConfig(server="python", threads=1, context_tokens=512, nice=0))
    assert isinstance(server, PythonLlamaServer)
    async with server:
        llm = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=60.0)
        try:
            answer = "".join([d async for d in llm.stream_chat(QUESTION, max_tokens=16, temperature=0.0)])
        finally:
            await llm.aclose()
    assert answer.strip()
