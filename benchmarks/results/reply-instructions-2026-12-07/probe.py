"""After the agent's own reply, does a response with instructions of its own follow them? Five prompt shapes.

Run against a llama-server on 127.0.0.1:8301 started with ``LLAMA_ARG_PREFILL_ASSISTANT=false`` and
``--temp 0.3`` on the embedded Qwen2.5-Coder-0.5B GGUF: ``python probe.py 4`` (tries per case).
"""

from __future__ import annotations

import collections
import re
import sys
from typing import Any

import httpx

SESSION = "You are a friendly voice assistant. Answer in one or two short sentences."
CONVERSATIONS = [
    [
        {"role": "user", "content": "Hi, I am Ada."},
        {"role": "assistant", "content": "Hello Ada! How can I assist you today?"},
    ],
    [
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
]
CUES = [
    ("Say goodbye to the caller.", r"\b(goodbye|bye)\b"),
    ("Ask the caller whether they are still there.", r"still there.*\?"),
    ("Tell the caller that their order has shipped.", r"\bshipped\b"),
    ("Ask the caller if they need anything else.", r"anything else.*\?"),
]
# Spoken about the caller, not to them ("Yes, the caller is still there."): not followed. (The first
# run of this probe counted the key words alone, and so counted such replies.)
ABOUT_THE_CALLER = re.compile(r"\b(caller|they|their|them)\b|^yes\b", re.IGNORECASE)


def shapes(instructions: str, said: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    def system(text: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": text}]

    def user(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    return {
        "A replace at top (now)": system(instructions) + said,
        "B session top, instr as last system": system(SESSION) + said + system(instructions),
        "D instr top, instr as last system": system(instructions) + said + system(instructions),
        "E session top, instr as last user": system(SESSION) + said + user(instructions),
        "F instr top, instr as last user": system(instructions) + said + user(instructions),
    }


def main(tries: int) -> None:
    followed: collections.Counter[Any] = collections.Counter()
    total: collections.Counter[Any] = collections.Counter()
    samples: dict[str, list[tuple[str, bool, str]]] = collections.defaultdict(list)
    for said in CONVERSATIONS:
        for instructions, pattern in CUES:
            for name, messages in shapes(instructions, said).items():
                for _ in range(tries):
                    body = {"model": "q", "messages": messages, "max_tokens": 40}
                    reply = httpx.post("http://127.0.0.1:8301/v1/chat/completions", json=body, timeout=120).json()
                    text = reply["choices"][0]["message"]["content"]
                    hit = (
                        bool(re.search(pattern, text, re.IGNORECASE))
                        and not ABOUT_THE_CALLER.search(text)
                        and text.strip() != said[-1]["content"]
                    )
                    for key in (name, (name, instructions)):
                        followed[key] += hit
                        total[key] += 1
                    samples[name].append((instructions[:25], hit, text.replace("\n", " ")[:90]))
    for key in total:
        print(f"{key}: {followed[key]} of {total[key]}")
        shown = samples[key] if isinstance(key, str) else []  # a few replies of each shape
        for sample in shown[:: max(1, len(shown) // 8)]:
            print("    ", sample)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
