"""Keeping a reply in the language its voice speaks.

A small multilingual LLM (the embedded Qwen) now and then answers an English question in
Chinese, which an English-only voice (Piper) cannot speak: the whole reply would fail. Three
defences: the LLM is told the voice's language (:func:`in_the_voice_language`); a reply that
still opens in Chinese characters is asked for once more, more firmly, before anything of it is
spoken (:func:`speakable_opening`: the first answer is dropped after a few tokens); and a reply
that turns to Chinese later ends where it does, with what was said in the voice's language.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

from cosyagent.engines.base import ChatMessage
from cosyagent.engines.text_scripts import HAN, LANGUAGE_NAMES

logger = logging.getLogger(__name__)

OPENING_CHARS = 12  # enough text to tell its script; a few tokens, tens of milliseconds


def in_the_voice_language(messages: Sequence[ChatMessage], voice_languages: Sequence[str]) -> list[ChatMessage]:
    """``messages`` with the system message told to answer in the voice's one language.
    Voices of several languages (or that do not say) change nothing."""
    if len(voice_languages) != 1:
        return list(messages)
    rule = _rule(voice_languages[0])
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        return [{**messages[0], "content": f"{messages[0]['content']}\n{rule}"}, *messages[1:]]
    return [{"role": "system", "content": rule}, *messages]


def speaks_no_chinese(voice_languages: Sequence[str]) -> bool:
    """A voice that says what it speaks, and Chinese is not among it."""
    return bool(voice_languages) and "zh" not in voice_languages


def firmer(messages: Sequence[ChatMessage], voice_languages: Sequence[str]) -> list[ChatMessage]:
    """The same request, ending with the language rule (the last word is the one a small model follows)."""
    name = LANGUAGE_NAMES.get(voice_languages[0], voice_languages[0]) if voice_languages else "English"
    return [*messages, {"role": "system", "content": f"Reply in {name} only, never in Chinese."}]


async def speakable_opening(first: AsyncIterator[str], again: Callable[[], AsyncIterator[str]]) -> AsyncIterator[str]:
    """The text of ``first``; if it opens with Chinese characters, ``first`` is closed and the
    text of ``again()`` follows instead. Asked once: a second answer opening in Chinese is passed
    on, and the voice refuses it with its own clear error (``UnspeakableTextError``). An answer
    (either) that turns to Chinese after its opening ends there: its stream is closed and the
    reply is what came before."""
    async with aclosing(first):  # type: ignore[type-var]  # the LLM streams are async generators
        held = await _opening(first)
        if not HAN.search(held.lstrip()[:OPENING_CHARS]):
            async for piece in _until_chinese(held, first):
                yield piece
            return
    logger.warning("the LLM answered in Chinese (%r), which the voice cannot speak: asked again", held[:40])
    retry = again()
    async with aclosing(retry):  # type: ignore[type-var]
        held = await _opening(retry)
        if HAN.search(held.lstrip()[:OPENING_CHARS]):
            yield held
            async for delta in retry:
                yield delta
            return
        async for piece in _until_chinese(held, retry):
            yield piece


async def _opening(text: AsyncIterator[str]) -> str:
    """The first deltas of ``text``, until they hold ``OPENING_CHARS`` characters (after leading
    space), a Chinese character among them, or the answer's end."""
    held = ""
    async for delta in text:
        held += delta
        opening = held.lstrip()[:OPENING_CHARS]
        if HAN.search(opening) or len(opening) >= OPENING_CHARS:
            break
    return held


async def _until_chinese(held: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    """``held``, then ``rest``, up to the first Chinese character."""
    text: str | None = held
    while text is not None:
        cut = HAN.search(text)
        if cut is not None:
            if text[: cut.start()]:
                yield text[: cut.start()]
            said = text[cut.start() :][:40]
            logger.warning("the LLM turned to Chinese mid-reply (%r): the voice cannot speak it, the reply ends", said)
            return
        if text:
            yield text
        text = await anext(rest, None)


def _rule(language: str) -> str:
    # Not "...: your voice speaks English only.": the embedded 0.5B model gave that sentence back as
    # its whole answer to 4 of 180 "how do I get to Dublin?" (seeded, docs/benchmarks.md, 2026-12-06).
    name = LANGUAGE_NAMES.get(language, language)
    return f"Always answer in {name}."
