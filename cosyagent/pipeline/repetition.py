"""A reply that says the same clause a third time ends there.

The embedded 0.5B model now and then falls into a loop ("Bees make honey, honey bees, honey
bees, honey bees.", or "bees make honey" over and over up to its token cap: ~15 s of speech).
Measured on 2026-12-07: 1 of 300 answers to "What do bees make?", none of 1080 answers to the
everyday questions with or without llama.cpp's samplers against repetition (DRY, a repetition
penalty), which changed nothing measurable, so nothing is set there: the guard is here, for any
LLM. The text passes on the moment it comes (a reply about to run dry speaks the words it has:
pipeline.speak); each clause is looked at as it ends, and when one ends that the reply already
said twice, the LLM's stream is closed (the server stops decoding) and the reply ends with it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing

from cosyagent.engines.text_scripts import HAN

logger = logging.getLogger(__name__)

SAYINGS = 3  # the saying of one clause that ends the reply
_CLAUSE_END = re.compile(r"[,.;:!?\n，。；：！？、]")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _clause_key(text: str) -> tuple[str, ...] | None:
    """The clause's words, lowercased; None for one too short to call a loop: a single word
    ("a sweet, sweet, sweet honey" is a stutter the model often makes, not a loop), except a
    Chinese clause of four characters or more (Chinese has no spaces between its words)."""
    words = tuple(word.lower() for word in _WORD.findall(text))
    if len(words) >= 2 or (len(words) == 1 and len(words[0]) >= 4 and HAN.search(words[0])):
        return words
    return None


async def until_it_repeats(deltas: AsyncIterator[str]) -> AsyncIterator[str]:
    """``deltas`` as they come, up to the end of a clause said for the third time."""
    said: Counter[tuple[str, ...]] = Counter()
    open_clause = ""
    async with aclosing(deltas):  # type: ignore[type-var]  # the LLM streams are async generators
        async for delta in deltas:
            start = 0
            for end in _CLAUSE_END.finditer(delta):
                clause, open_clause, start = open_clause + delta[start : end.start()], "", end.end()
                key = _clause_key(clause)
                if key is None:
                    continue
                said[key] += 1
                if said[key] == SAYINGS:
                    logger.warning("the LLM said %r a third time: the reply ends there", clause.strip()[:60])
                    yield delta[: end.end()]  # not what follows the clause in the same delta
                    return
            open_clause += delta[start:]
            yield delta
