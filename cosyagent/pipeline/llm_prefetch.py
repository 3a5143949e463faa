"""A reply's LLM request sent while the silence wait runs, before the turn has ended.

When a pause's speculative transcript is in and the speaker is still quiet, the request that
the automatic reply would send is known already: the conversation plus this transcript. Sent
then, with ``server_vad`` (the silence alone ends turns: ~0.3 s of its 0.5 s wait is left when
the transcript lands), the LLM reads the prompt and writes the first clause before the turn
ends, and the reply finds it waiting. The request is dropped (its HTTP stream closed, so the
server stops) when the speaker goes on, and a reply whose request differs in anything (the
client changed the conversation meanwhile) sends its own. Measured in docs/benchmarks.md,
"A reply's LLM request sent while the silence wait runs".

Earlier still, while a lone speaker talks, each draft of their turn is *read ahead*
(:meth:`PrefetchingLLM.read_ahead`): the request the reply would send were the turn to end on the
draft's words, asking one token that is never used, so that the embedded llama.cpp server holds
that prompt in the conversation's slot and the reply reads only the words the draft lacked
("The LLM reads a lone speaker's drafts while they talk").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cosyagent.engines.base import ChatEvent, ChatLLM, ChatMessage, EngineInfo
from cosyagent.engines.llm import text_deltas
from cosyagent.pipeline.voice_language import in_the_voice_language

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    """Everything a chat request sends; two requests are the same request when these are equal."""

    messages: Sequence[ChatMessage]
    tools: Sequence[dict[str, Any]] = ()
    tool_choice: str = "auto"
    max_tokens: int | None = None
    temperature: float | None = None

    def same_as(self, other: ChatRequest) -> bool:
        choice = self.tool_choice if self.tools else "auto"  # (not sent without tools)
        other_choice = other.tool_choice if other.tools else "auto"
        return (
            list(self.messages) == list(other.messages)
            and list(self.tools) == list(other.tools)
            and choice == other_choice
            and self.max_tokens == other.max_tokens
            and self.temperature == other.temperature
        )


def llm_request(
    messages: Sequence[ChatMessage],
    languages: Sequence[str],
    audio: bool,
    tools: Sequence[dict[str, Any]] = (),
    tool_choice: str = "auto",
    max_tokens: int | None = None,
) -> ChatRequest:
    """The request a reply sends the LLM first: a spoken reply asks for the voice's language.
    (A request sent ahead of the reply must be exactly this one to be used.)"""
    if audio:
        messages = in_the_voice_language(messages, languages)
    return ChatRequest(messages, tools, tool_choice, max_tokens)


class _Prefetch:
    """One request under way, its events kept until a reply takes them (or it is dropped).
    ``read_only``: sent for its prompt alone (:meth:`PrefetchingLLM.read_ahead`), never taken."""

    def __init__(self, key: str, request: ChatRequest, llm: ChatLLM, *, read_only: bool = False) -> None:
        self.key = key
        self.request = request
        self.read_only = read_only
        self._events: asyncio.Queue[ChatEvent | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(llm), name=f"llm-prefetch-{key}")

    async def _read(self, llm: ChatLLM) -> None:
        request = self.request
        stream = llm.stream_chat_events(
            request.messages,
            tools=request.tools,
            tool_choice=request.tool_choice,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
        )
        try:
            async for event in stream:
                self._events.put_nowait(event)
            self._events.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (the reply that takes it raises it, as if it had asked)
            self._events.put_nowait(exc)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator

    async def events(self) -> AsyncGenerator[ChatEvent, None]:
        """What the LLM has said so far, then the rest as it comes; closing this drops the request."""
        try:
            while (event := await self._events.get()) is not None:
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            await self.drop()

    def cancel(self) -> asyncio.Task[None]:
        """Stop the request (its stream closes once the task has seen it); returns the task."""
        self._task.cancel()
        return self._task

    async def drop(self) -> None:
        """Stop the request and wait until it has (a cancellation of the caller still reaches it)."""
        await asyncio.wait([self.cancel()])


class PrefetchingLLM:
    """A :class:`~cosyagent.engines.base.ChatLLM` for one session that can send a request ahead
    (:meth:`prefetch`); the next request equal to it gets its answer, any other drops it."""

    def __init__(self, llm: ChatLLM) -> None:
        self._llm = llm
        self._ahead: _Prefetch | None = None
        self._dropped: set[asyncio.Task[None]] = set()  # requests still closing their streams

    @property
    def model(self) -> str:
        return self._llm.model

    @property
    def info(self) -> EngineInfo:
        return self._llm.info

    def prefetch(self, key: str, request: ChatRequest) -> None:
        """Send ``request`` now (replacing any other sent ahead), known as ``key`` to :meth:`drop`."""
        self.drop()
        self._ahead = _Prefetch(key, request, self._llm)

    def read_ahead(self, key: str, request: ChatRequest) -> None:
        """Have the LLM read ``request``'s prompt now: it is sent asking for one token, which is
        never used. The LLM keeps what it read (llama.cpp's cache of the conversation's slot), so a
        later request that starts the same way reads only the rest. Replaces an earlier read, never
        a request sent ahead for a reply (:meth:`prefetch`)."""
        if self._ahead is not None and not self._ahead.read_only:
            return
        self.drop()
        self._ahead = _Prefetch(key, replace(request, max_tokens=1), self._llm, read_only=True)

    def drop(self, key: str | None = None) -> None:
        """Stop the request sent ahead (only if it is ``key``'s, when given)."""
        ahead = self._ahead
        if ahead is not None and (key is None or ahead.key == key):
            self._ahead = None
            task = ahead.cancel()
            self._dropped.add(task)
            task.add_done_callback(self._dropped.discard)

    async def _settle(self) -> None:
        """Wait until every dropped request has closed its stream (and so freed its LLM slot)."""
        if self._dropped:
            await asyncio.gather(*self._dropped, return_exceptions=True)

    def stream_chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> AsyncIterator[str]:
        return text_deltas(self.stream_chat_events(messages, max_tokens=max_tokens, temperature=temperature))

    async def stream_chat_events(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str = "auto",
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        request = ChatRequest(messages, tools, tool_choice, max_tokens, temperature)
        ahead, self._ahead = self._ahead, None
        events: AsyncIterator[ChatEvent]
        if ahead is not None and not ahead.read_only and ahead.request.same_as(request):
            logger.debug("reply: its LLM request was sent ahead (%s)", ahead.key)
            events = ahead.events()
        else:
            if ahead is not None:
                await ahead.drop()
            await self._settle()  # (before asking: a request closing still holds the conversation's slot)
            events = self._llm.stream_chat_events(
                messages, tools=tools, tool_choice=tool_choice, max_tokens=max_tokens, temperature=temperature
            )
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # an async generator

    async def aclose(self) -> None:
        """Drop any request sent ahead and wait until it has stopped; the LLM belongs to the caller."""
        self.drop()
        await self._settle()
