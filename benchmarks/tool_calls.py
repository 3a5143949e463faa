"""How reliably the embedded LLM calls a simple tool, and leaves it alone when it does not apply.

    .venv/bin/python -m benchmarks.tool_calls [--runs 1]

The embedded model (``llm.embedded_model``, Qwen2.5-Coder-0.5B by default) runs in the llama.cpp
server ``cosyagent serve`` starts (``build_embedded_llm``), at its default sampling. Each prompt
goes to it as a Realtime response offered one tool would: the server's system prompt
(``realtime.instructions``), its ``realtime.max_output_tokens``, the tool ``get_weather(city)``
with ``tool_choice: auto``, streamed through the product's client (tool calls the model writes
as text are recovered as the product recovers them). Ten prompts ask for the weather (a call
naming the right city is a hit); five do not (any call is a false call).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import machine_info, result_path, write_result
from cosyagent.agent.tools import FunctionTool, chat_tools
from cosyagent.config import LLMConfig, RealtimeConfig
from cosyagent.engines.base import ToolCallDelta
from cosyagent.engines.llm import OpenAICompatibleLLM
from cosyagent.runtime.engine_choice import build_embedded_llm

logger = logging.getLogger("tool_calls")
RESULTS = Path(__file__).resolve().parent / "results"

WEATHER = FunctionTool(
    "get_weather",
    "Get the current weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}}, "required": ["city"]},
)
CALLS = [
    ("What's the weather like in Paris?", "paris"),
    ("Is it raining in London right now?", "london"),
    ("How hot is it in Tokyo today?", "tokyo"),
    ("Tell me the weather in Berlin.", "berlin"),
    ("Do I need an umbrella in Seattle?", "seattle"),
    ("What's the temperature in Madrid?", "madrid"),
    ("Is it sunny in Rome?", "rome"),
    ("Weather forecast for Chicago, please.", "chicago"),
    ("How cold is it in Moscow?", "moscow"),
    ("Is it windy in Dublin today?", "dublin"),
]
NO_CALLS = [
    "What is the capital of France?",
    "Tell me a short joke.",
    "How many minutes are in two hours?",
    "Give me a name for a puppy.",
    "What's a good tip for sleeping better?",
]


async def ask(llm: OpenAICompatibleLLM, prompt: str, realtime: RealtimeConfig) -> dict[str, Any]:
    tools, choice = chat_tools((WEATHER,), "auto")
    messages = [{"role": "system", "content": realtime.instructions}, {"role": "user", "content": prompt}]
    started = time.perf_counter()
    text: list[str] = []
    calls: dict[int, tuple[str, str]] = {}
    async for event in llm.stream_chat_events(
        messages, tools=tools, tool_choice=choice, max_tokens=realtime.max_output_tokens
    ):
        if isinstance(event, ToolCallDelta):
            name, arguments = calls.get(event.index, ("", ""))
            calls[event.index] = (name + (event.name or ""), arguments + event.arguments)
        elif isinstance(event, str):
            text.append(event)
    return {
        "prompt": prompt,
        "text": "".join(text),
        "calls": [{"name": n, "arguments": a} for n, a in calls.values()],
        "seconds": round(time.perf_counter() - started, 2),
    }


def hit(answer: dict[str, Any], city: str) -> bool:
    for call in answer["calls"]:
        try:
            arguments = json.loads(call["arguments"])
        except json.JSONDecodeError:
            continue
        if call["name"] == "get_weather" and city in str(arguments.get("city", "")).lower():
            return True
    return False


async def main(runs: int) -> None:
    realtime, config = RealtimeConfig(), LLMConfig()
    started = dt.datetime.now(dt.UTC)
    server = build_embedded_llm(config)
    server.startup_timeout_s = 600.0  # a busy shared machine loads the model slowly
    async with server:
        llm = OpenAICompatibleLLM(server.base_url, server.model, timeout_s=600.0)
        try:
            calls, others = [], []
            for run in range(runs):
                for prompt, city in CALLS:
                    answer = await ask(llm, prompt, realtime)
                    answer["hit"] = hit(answer, city)
                    calls.append(answer)
                    logger.info("run %d: %s", run, answer)
                for prompt in NO_CALLS:
                    answer = await ask(llm, prompt, realtime)
                    answer["false_call"] = bool(answer["calls"])
                    others.append(answer)
                    logger.info("run %d: %s", run, answer)
        finally:
            await llm.aclose()
    report = {
        "benchmark": "tool_calls",
        "started": started.isoformat(),
        "machine": machine_info(),
        "model": config.embedded_model,
        "called_when_asked": f"{sum(a['hit'] for a in calls)}/{len(calls)}",
        "called_when_not_asked": f"{sum(a['false_call'] for a in others)}/{len(others)}",
        "answers": calls + others,
    }
    path = result_path(RESULTS, "tool-calls", started)
    write_result(path, report)
    print(json.dumps({k: report[k] for k in ("model", "called_when_asked", "called_when_not_asked")}), path)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    asyncio.run(main(parser.parse_args().runs))
