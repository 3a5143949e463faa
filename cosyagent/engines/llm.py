"""A streaming chat client for any OpenAI-compatible endpoint (llama.cpp, vLLM, Ollama, a cloud API)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import openai

from cosyagent.engines.base import (
    ChatEvent,
    ChatFinished,
    ChatMessage,
    EngineError,
    EngineInfo,
    EngineUnavailableError,
    ToolCallDelta,
)
from cosyagent.engines.context_fit import is_context_overflow, without_older_half
from cosyagent.engines.tool_text import TextToolCalls, one_call_schema

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

logger = logging.getLogger(__name__)


class OpenAICompatibleLLM:
    """Chat completions over HTTP with ``openai.AsyncOpenAI``, streamed as text deltas (and the
    pieces of tool calls, when tools are offered).

    Foreign errors are translated at the boundary: an unreachable endpoint, a timeout,
    a stream broken off mid-reply, a 5xx or a 429 become :class:`EngineUnavailableError`;
    anything else the server refuses becomes :class:`EngineError`. ``max_retries``
    defaults to 0: in a live conversation a fast failure beats a retry the user waits through.

    ``timeout_s`` bounds every wait on the endpoint (the response's headers, then each
    streamed chunk), ``connect_timeout_s`` the TCP connection: an endpoint that accepts
    and never answers fails the reply after ``timeout_s``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        *,
        connect_timeout_s: float = 5.0,
        max_retries: int = 0,
        seed: int | None = None,
        call_schema: bool = False,
    ) -> None:
        """``call_schema``: a request that requires a call also sends llama.cpp's ``json_schema`` of
        one call to an offered tool (:func:`~cosyagent.engines.tool_text.one_call_schema`): for a
        llama-server, which does not hold every model to ``tool_choice: required``."""
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be positive")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self._api_key = api_key or "no-key"  # local servers ignore it; the SDK insists on one
        self._timeout = openai.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self._max_retries = max_retries
        self.seed = seed  # sent with every request (the same prompt, the same reply); None: random
        self.call_schema = call_schema
        self._client = self._new_client()

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self._timeout, max_retries=self._max_retries
        )

    async def retarget(self, base_url: str) -> None:
        """Send later requests to ``base_url`` (the embedded server restarted on another port)."""
        old, self.base_url = self._client, base_url.rstrip("/")
        self._client = self._new_client()
        await old.close()

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("openai-compatible", self.model)

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield the reply's non-empty text deltas as they arrive.

        Closing the iterator early (``aclose()``, or cancelling the consuming task)
        closes the HTTP response, so the server sees the disconnect and stops
        generating.
        """
        async for delta in text_deltas(
            self.stream_chat_events(messages, max_tokens=max_tokens, temperature=temperature)
        ):
            yield delta

    async def stream_chat_events(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str = "auto",
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Yield text deltas and :class:`ToolCallDelta` pieces (``choices[0].delta.tool_calls``) as
        they arrive, then :class:`ChatFinished` with the stream's ``finish_reason``; with tools, a
        reply that is a call written as text becomes that call (:mod:`cosyagent.engines.tool_text`);
        under ``tool_choice: required`` the first such call, once complete, ends the stream.
        Cancel-safe as :meth:`stream_chat`. ``extra_body``: fields the endpoint adds to the API
        (llama-server's ``id_slot``)."""
        options: dict[str, Any] = {}
        extra = dict(extra_body or {})
        if self.call_schema and tools and tool_choice == "required" and (schema := one_call_schema(tools)):
            extra["json_schema"] = schema
        if extra:
            options["extra_body"] = extra
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature
        if self.seed is not None:
            options["seed"] = self.seed
        if tools:
            options["tools"] = list(tools)
            options["tool_choice"] = tool_choice
        started = time.perf_counter()
        sent, reconnected = list(messages), False
        while True:  # bounded: one reconnection, and each shortening halves the history
            try:
                stream = await self._client.chat.completions.create(
                    model=self.model,
                    messages=cast("list[ChatCompletionMessageParam]", sent),
                    stream=True,
                    **options,
                )
                break
            except openai.APIConnectionError as exc:
                # Dropped before any answer (not a timeout): most often a pooled keep-alive
                # connection the server had just closed (llama-server does, right after some
                # streams). Nothing was processed, so one immediate retry is safe.
                if reconnected or isinstance(exc, openai.APITimeoutError):
                    raise self._translate(exc) from exc
                reconnected = True
                logger.info("LLM endpoint dropped the connection before answering; retrying once: %s", exc)
            except openai.BadRequestError as exc:
                shorter = without_older_half(sent) if is_context_overflow(exc) else None
                if shorter is None:
                    raise self._translate(exc) from exc
                logger.warning(
                    "the conversation is longer than the LLM's context: %d older messages left out (%s)",
                    len(messages) - len(shorter),
                    exc.message,
                )
                sent = shorter
            except openai.OpenAIError as exc:
                raise self._translate(exc) from exc
        first = True
        recover = tools and tool_choice != "none"
        text_calls = TextToolCalls(t["function"]["name"] for t in tools) if recover else None
        # A required call written as text ends the reply: the model would go on to the token cap.
        first_call_ends = text_calls is not None and tool_choice == "required"
        calls_seen = 0
        finish_reason: str | None = None
        try:
            async for chunk in stream:
                if not chunk.choices:
                    continue
                finish_reason = chunk.choices[0].finish_reason or finish_reason
                delta = chunk.choices[0].delta
                if first and (delta.content or delta.tool_calls):
                    first = False
                    logger.debug("LLM first token after %.3f s", time.perf_counter() - started)
                if delta.content:
                    for piece in text_calls.push(delta.content) if text_calls else [delta.content]:
                        yield piece
                    if first_call_ends and text_calls and (call := text_calls.first_call(calls_seen)):
                        yield call
                        yield ChatFinished("tool_calls")  # (the stream is closed below: no more decoding)
                        return
                for call in delta.tool_calls or ():
                    calls_seen = max(calls_seen, call.index + 1)
                    function = call.function
                    yield ToolCallDelta(
                        index=call.index,
                        arguments=(function.arguments if function else None) or "",
                        call_id=call.id or None,
                        name=(function.name if function else None) or None,
                    )
            for piece in text_calls.flush(calls_seen) if text_calls else []:
                yield piece
            yield ChatFinished(finish_reason)
        except openai.OpenAIError as exc:
            raise self._translate(exc, mid_reply=True) from exc
        finally:
            await stream.close()

    def _where(self) -> str:
        return f"LLM endpoint {self.base_url} (model {self.model!r})"

    def _translate(self, exc: openai.OpenAIError, *, mid_reply: bool = False) -> EngineError:
        where = self._where()
        if isinstance(exc, openai.APITimeoutError):
            when = "stopped answering mid-reply" if mid_reply else "did not answer"
            return EngineUnavailableError(f"{where} {when}: nothing for {self.timeout_s:g} s (llm.timeout_s)")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            what = "broke off the reply" if mid_reply else "is unreachable"
            return EngineUnavailableError(f"{where} {what}: {cause!r}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status >= 500 or status == 429:
                return EngineUnavailableError(f"{where} answered {status}: {exc.message}")
            return EngineError(f"{where} refused the request ({status}): {exc.message}")
        return EngineError(f"{where} failed: {exc}")

    async def aclose(self) -> None:
        await self._client.close()


async def text_deltas(events: AsyncGenerator[ChatEvent, None]) -> AsyncGenerator[str, None]:
    """The text of a :meth:`~OpenAICompatibleLLM.stream_chat_events` stream; closing this closes it."""
    try:
        async for event in events:
            if isinstance(event, str):
                yield event
    finally:
        await events.aclose()
