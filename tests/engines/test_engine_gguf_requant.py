"""The real Qwen2.5-Coder-0.5B file re-quantized by the real llama-quantize (built by `make install`):
the layers' Q5_0 matrices become IQ4_NL, every other tensor is the packaged one, the result is
made once and reused, a file that no longer matches its stamp is not trusted, and llama-server
answers with it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cosyagent.engines.base import ChatMessage
from cosyagent.engines.gguf_parts import QWEN25_CODER_05B_Q4KM, assemble
from cosyagent.engines.gguf_requant import IQ4_NL, Q5_0, find_llama_quantize, iq4_nl_weights, tensor_types
from cosyagent.engines.llama_server import EmbeddedLlamaServer
from cosyagent.engines.llm import OpenAICompatibleLLM

MODEL = QWEN25_CODER_05B_Q4KM


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the packaged file, the re-quantized one made in a fresh cache)."""
    assert find_llama_quantize() is not None, "make install builds llama-quantize into .venv/bin"
    packaged = assemble(MODEL)
    return packaged, iq4_nl_weights(packaged, MODEL.sha256, directory=tmp_path_factory.mktemp("requant"))


def test_the_q5_0_matrices_become_iq4_nl_and_the_rest_is_copied(made: tuple[Path, Path]) -> None:
    packaged, requantized = made
    assert requantized != packaged
    before, after = tensor_types(packaged), tensor_types(requantized)
    assert before.keys() == after.keys()
    converted = {name for name, kind in before.items() if kind == Q5_0 and name.startswith("blk.")}
    assert len(converted) == 132  # attn_q/k/output, ffn_gate/up and some attn_v of 24 layers
    assert all(after[name] == IQ4_NL for name in converted)
    assert all(after[name] == kind for name, kind in before.items() if name not in converted)
    assert requantized.stat().st_size < packaged.stat().st_size  # 4.5 bits per weight instead of 5.5


def test_it_is_made_once_and_a_changed_file_is_not_trusted(made: tuple[Path, Path]) -> None:
    packaged, requantized = made
    began = time.perf_counter()
    assert iq4_nl_weights(packaged, MODEL.sha256, directory=requantized.parent) == requantized
    assert time.perf_counter() - began < 0.5  # a stat and a stamp, not another conversion

    stat = requantized.stat()
    os.utime(requantized, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # edited since it was made
    broken_tool = requantized.parent / "missing-llama-quantize"
    assert iq4_nl_weights(packaged, MODEL.sha256, tool=broken_tool, directory=requantized.parent) == packaged
    os.utime(requantized, ns=(stat.st_atime_ns, stat.st_mtime_ns))


async def test_llama_server_answers_with_the_requantized_weights(made: tuple[Path, Path]) -> None:
    question: list[ChatMessage] = [{"role": "user", "content": "What is the capital of France?"}]
    async with EmbeddedLlamaServer(made[1], n_threads=2, n_ctx=512, parallel=1) as server:
        llm = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=60.0)
        try:
            reply = "".join([delta async for delta in llm.stream_chat(question, max_tokens=24, temperature=0.0)])
        finally:
            await llm.aclose()
    assert "paris" in reply.lower()
