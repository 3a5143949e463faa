"""Warm every slot of the embedded llama.cpp server with the default instructions at startup.

llama-server keeps one prompt cache per slot (``llm.parallel`` of them). A slot that has never
served a request must evaluate the system prompt on its first turn: about 20 more prompt tokens,
0.2 s on an idle 2-core CPU and 0.5 s or more while other sessions are being served. So the
first conversations after a start (four people joining a demo) each paid for it on their first
turn. One one-token request per slot fills every slot with the instructions (and the opening
line a reply asked for before anyone spoke hears); llama.cpp then reuses that prefix for whichever
conversation the slot serves next. The instructions must be
warmed as a spoken reply sends them (:func:`spoken_instructions`): with the rule that tells the
LLM its voice's one language, tokens that a first turn would otherwise read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import httpx

from cosyagent.agent.conversation import OPENING_LINE
from cosyagent.engines.base import ChatMessage
from cosyagent.pipeline.voice_language import in_the_voice_language

logger = logging.getLogger(__name__)


def spoken_instructions(instructions: str, voice_languages: Sequence[str]) -> str:
    """The system message a spoken reply in a voice of ``voice_languages`` sends (``pipeline/reply.py``)."""
    system: list[ChatMessage] = [{"role": "system", "content": instructions}]
    return str(in_the_voice_language(system, voice_languages)[0]["content"])


async def warm_llm_slots(base_url: str, model: str, instructions: str, slots: int, timeout_s: float) -> int:
    """One request pinned to each slot (llama-server's ``id_slot``), all at once; returns how
    many slots answered. A failure costs only the warm-up: the slot warms on its first turn.
    ``instructions``: as sessions send them (:func:`spoken_instructions`)."""
    messages = [{"role": "system", "content": instructions}, {"role": "user", "content": OPENING_LINE}]
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s) as client:

        async def warm(slot: int) -> None:
            body = {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0.0, "id_slot": slot}
            response = await client.post("/chat/completions", json=body)
            response.raise_for_status()

        try:
            async with asyncio.timeout(timeout_s):
                results = await asyncio.gather(*(warm(slot) for slot in range(slots)), return_exceptions=True)
        except TimeoutError:
            logger.warning("warming the LLM's %d slots took over %.0f s: left unfinished", slots, timeout_s)
            return 0
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        logger.warning("warming the LLM's slots: %d of %d failed (%s)", len(failures), slots, failures[0])
    warmed = slots - len(failures)
    logger.info("LLM slots warmed with the instructions: %d of %d in %.2f s", warmed, slots, time.monotonic() - began)
    return warmed
