"""A reply asked for before anyone spoke (the agent opening the call): what the embedded LLM says.

Run against a running server: python probe.py http://127.0.0.1:8188/v1 [N]. For each session
instructions (the server's own, a bank's phone agent) and each output modality, N fresh sessions
each send `response.create` at once; prints every reply and how many greet (a greeting word) or
refuse ("sorry", "can't")."""

from __future__ import annotations

import asyncio
import re
import sys

from openai import AsyncOpenAI

GREETING_WORDS = {"hello", "hi", "hey", "welcome", "greetings", "morning", "afternoon", "evening"}
REFUSAL_WORDS = {"sorry", "can't", "cannot"}
INSTRUCTIONS = [None, "You are the phone agent of ACME Bank. Answer in one or two short sentences."]


async def opening(base_url: str, instructions: str | None, modality: str) -> str:
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    session: dict[str, object] = {"type": "realtime", "output_modalities": [modality]}
    if instructions:
        session["instructions"] = instructions
    text = ""
    async with client.realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session=session)  # type: ignore[arg-type]
        await conn.response.create()
        async for event in conn:
            if event.type in ("response.output_text.done", "response.output_audio_transcript.done"):
                text = getattr(event, "text", None) or getattr(event, "transcript", "")
            if event.type == "response.done":
                return text
    return text


async def main(base_url: str, n: int) -> None:
    for instructions in INSTRUCTIONS:
        for modality in ("audio", "text"):
            replies = [await opening(base_url, instructions, modality) for _ in range(n)]
            words = [set(re.findall(r"[a-z']+", reply.lower())) for reply in replies]
            greet = sum(bool(w & GREETING_WORDS) for w in words)
            refuse = sum(bool(w & REFUSAL_WORDS) for w in words)
            print(f"== {instructions or 'server instructions'} | {modality}: greet {greet}/{n}, refuse {refuse}/{n}")
            for reply in replies:
                print("   ", reply.replace("\n", " ")[:150])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10))
