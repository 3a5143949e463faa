"""Concurrent replies from the embedded LLM: llama.cpp's native server (parallel slots, continuous
batching) against llama-cpp-python's server (one request at a time).

    .venv/bin/python -m benchmarks.llm_concurrency [--requests 4] [--max-tokens 40] [--threads 2]

For each embedded GGUF (Qwen2.5-Coder-0.5B, SmolLM2-135M) and each server, the server is started
on a free loopback port, answers one request to warm up (not counted), then ``--requests``
streamed chat requests (a different short question each, temperature 0) are started at once.
Each request's first-token latency and total time are measured from the common start, with the
official openai SDK as the client. Results: a table on stdout and JSON in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import machine_info, result_path, write_result
from cosyagent.engines.base import ChatMessage
from cosyagent.engines.gguf_parts import QWEN25_CODER_05B_Q4KM, assemble
from cosyagent.engines.llama_process import LlamaServerProcess, default_model_path
from cosyagent.engines.llama_server import EmbeddedLlamaServer, PythonLlamaServer
from cosyagent.engines.llm import OpenAICompatibleLLM

logger = logging.getLogger("llm_concurrency")

RESULTS = Path(__file__).resolve().parent / "results"
MODELS: dict[str, Callable[[], Path]] = {
    "qwen2.5-coder-0.5b": functools.partial(assemble, QWEN25_CODER_05B_Q4KM),
    "smollm2": default_model_path,
}
QUESTIONS = (
    "What is the capital of France?",
    "Give me a tip for sleeping better.",
    "Tell me a short joke.",
    "How many minutes are in two hours?",
    "Suggest a name for a puppy.",
    "Why is the sky blue?",
    "What should I cook tonight?",
    "Name three colours of the rainbow.",
)


@dataclass(frozen=True)
class Reply:
    first_token_s: float
    total_s: float
    tokens: int


async def _one(llm: OpenAICompatibleLLM, question: str, max_tokens: int, started: float) -> Reply:
    messages: list[ChatMessage] = [{"role": "user", "content": question}]
    first = None
    deltas = 0
    async for _delta in llm.stream_chat(messages, max_tokens=max_tokens, temperature=0.0):
        if first is None:
            first = time.perf_counter() - started
        deltas += 1
    total = time.perf_counter() - started
    return Reply(first if first is not None else total, total, deltas)


async def measure(server: LlamaServerProcess, requests: int, max_tokens: int) -> list[Reply]:
    async with server:
        llm = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=300.0)
        try:
            await _one(llm, "Hello!", 8, time.perf_counter())  # warm-up
            started = time.perf_counter()
            return list(
                await asyncio.gather(
                    *(_one(llm, QUESTIONS[i % len(QUESTIONS)], max_tokens, started) for i in range(requests))
                )
            )
        finally:
            await llm.aclose()


def _servers(model: Callable[[], Path], threads: int, requests: int) -> dict[str, LlamaServerProcess]:
    return {
        f"native, {requests} slots": EmbeddedLlamaServer(model, n_threads=threads, n_ctx=1024, parallel=requests),
        "python, 1 at a time": PythonLlamaServer(model, n_threads=threads, n_ctx=1024),
    }


def _row(model: str, server: str, replies: list[Reply]) -> dict[str, Any]:
    firsts = sorted(r.first_token_s for r in replies)
    totals = sorted(r.total_s for r in replies)
    return {
        "model": model,
        "server": server,
        "first_token_s": [round(v, 2) for v in firsts],
        "total_s": [round(v, 2) for v in totals],
        "first_token_median_s": round(statistics.median(firsts), 2),
        "first_token_max_s": round(firsts[-1], 2),
        "all_done_s": round(totals[-1], 2),
        "tokens": sum(r.tokens for r in replies),
        "replies": [asdict(r) for r in replies],
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'model':<20} {'server':<20} {'first token (s), each':<28} {'done (s), each':<28} {'tok/s':>6}"
    print(header)
    print("-" * len(header))
    for row in rows:
        firsts = " ".join(f"{v:.2f}" for v in row["first_token_s"])
        totals = " ".join(f"{v:.2f}" for v in row["total_s"])
        rate = row["tokens"] / row["all_done_s"] if row["all_done_s"] else 0.0
        print(f"{row['model']:<20} {row['server']:<20} {firsts:<28} {totals:<28} {rate:>6.1f}")


async def main(requests: int, max_tokens: int, threads: int) -> None:
    started = dt.datetime.now()
    rows = []
    for model_name, model in MODELS.items():
        for server_name, server in _servers(model, threads, requests).items():
            logger.info("%s / %s", model_name, server_name)
            rows.append(_row(model_name, server_name, await measure(server, requests, max_tokens)))
    _print_table(rows)
    report = {
        "benchmark": "llm_concurrency",
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"requests": requests, "max_tokens": max_tokens, "threads": threads, "n_ctx_per_slot": 1024},
        "rows": rows,
    }
    path = result_path(RESULTS, "llm-concurrency", started)
    write_result(path, report)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise
    asyncio.run(main(args.requests, args.max_tokens, args.threads))
