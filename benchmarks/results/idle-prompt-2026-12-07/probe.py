"""After the caller stays silent past ``idle_timeout_ms``, does the agent prompt them to go on?

The conversation ends with the agent's own words (the idle timer arms only after a reply) and the
silence is an empty user item, which the LLM's view skips. Run against a llama-server on
127.0.0.1:8301 started with ``LLAMA_ARG_PREFILL_ASSISTANT=false`` and ``--temp 0.3`` on the
embedded Qwen2.5-Coder-0.5B GGUF: ``python probe.py 4`` (tries per case).
"""

from __future__ import annotations

import collections
import re
import sys

import httpx

SESSION = "You are a friendly voice assistant. Answer in one or two short sentences.\nAlways answer in English."
CONVERSATIONS = [
    [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
    ],
    [
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    [
        {"role": "user", "content": "Can you help me plan a trip to Rome?"},
        {"role": "assistant", "content": "Sure! How many days will you stay in Rome?"},
    ],
    [
        {"role": "user", "content": "Tell me a fun fact about octopuses."},
        {"role": "assistant", "content": "Octopuses have three hearts and blue blood."},
    ],
]
# A prompt to go on: a question to the caller that is neither the last reply again nor a refusal.
REFUSAL = re.compile(r"\b(sorry|can't|cannot|unable)\b", re.IGNORECASE)
LINES: dict[str, tuple[str, str] | None] = {
    "none: the view as it is (now)": None,
    "user: still there (third person)": ("user", "Ask the caller whether they are still there."),
    "user: first person, quiet": ("user", "I have been quiet for a while."),
    "user: bracketed note to the agent": (
        "user",
        "[The caller has been silent for a while. Say one short sentence to the caller: ask whether they are"
        " still there.]",
    ),
    "system: second person": (
        "system",
        "The user has been silent for a while. Ask the user, in one short question, whether they are still there.",
    ),
    "user: silent, still there": (
        "user",
        "The caller has said nothing for a while. Briefly ask whether they are still there.",
    ),
    "user: silent, go on": (
        "user",
        "The caller has said nothing for a while. Briefly prompt them to go on with the conversation.",
    ),
    "user: second person": (
        "user",
        "(No answer from me for a while. Ask me, in one short question, whether I am still there.)",
    ),
}


def prompts_the_caller(text: str, last: str) -> bool:
    return "?" in text and "caller" not in text.lower() and not REFUSAL.search(text) and text.strip() != last.strip()


def main(tries: int) -> None:
    followed: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples: dict[str, list[tuple[bool, str]]] = collections.defaultdict(list)
    for said in CONVERSATIONS:
        for name, line in LINES.items():
            messages = [{"role": "system", "content": SESSION}, *said]
            if line is not None:
                messages.append({"role": line[0], "content": line[1]})
            for _ in range(tries):
                body = {"model": "q", "messages": messages, "max_tokens": 40}
                reply = httpx.post("http://127.0.0.1:8301/v1/chat/completions", json=body, timeout=120).json()
                text = reply["choices"][0]["message"]["content"]
                hit = prompts_the_caller(text, said[-1]["content"])
                followed[name] += hit
                total[name] += 1
                samples[name].append((hit, text.replace("\n", " ")[:100]))
    for name in total:
        print(f"{name}: {followed[name]} of {total[name]}")
        for sample in samples[name][:: max(1, len(samples[name]) // 8)]:
            print("    ", sample)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
