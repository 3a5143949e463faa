"""Keeps the embedded LLM server alive: notices when the llama.cpp child dies, restarts it.

:class:`LLMSupervisor` watches the child (a pidfd: no thread, no polling). When it ends
without being asked to, the supervisor logs how (``killed by signal 9 (SIGKILL)``) and
restarts it, with a growing pause between attempts (0.5 s, 1 s, 2 s... at most 8 s), at most
``max_restarts`` times in any ``window_s``; past that the LLM is marked ``failed`` and stays
down until the agent is restarted. ``/v1/health`` reports the state meanwhile.

:class:`SupervisedLLM` is what sessions talk to: a reply cut off by the child's death fails
with an error that says so (rather than a bare "connection refused"), and a reply asked for
while the server restarts waits for it (at most ``wait_s``) instead of failing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, Literal

from cosyagent.engines.base import ChatEvent, ChatMessage, EngineInfo, EngineUnavailableError
from cosyagent.engines.llama_process import LlamaServerProcess, describe_exit
from cosyagent.engines.llm import OpenAICompatibleLLM, text_deltas
from cosyagent.runtime.llm_slots import LLMSlots

logger = logging.getLogger(__name__)

LLMState = Literal["running", "restarting", "failed", "stopped"]

_FIRST_PAUSE_S = 0.5
_LONGEST_PAUSE_S = 8.0
_DYING_S = 2.0  # a killed llama-server can take this long to be reaped on a loaded machine (a full test run)


class LLMSupervisor:
    """Restarts ``server`` whenever it dies, retargeting ``llm`` if its port changes."""

    def __init__(
        self, server: LlamaServerProcess, llm: OpenAICompatibleLLM, *, max_restarts: int = 5, window_s: float = 600.0
    ) -> None:
        if max_restarts < 0 or window_s <= 0:
            raise ValueError("max_restarts must be >= 0 and window_s positive")
        self._server = server
        self._llm = llm
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.state: LLMState = "running"
        self.restarts = 0  # successful restarts since the agent started
        self.last_exit: str | None = None  # how the child last died, in words
        self._attempts: collections.deque[float] = collections.deque()  # restart attempts in the window
        self._up = asyncio.Event()  # set while running (and once failed or stopped: waiters then see why)
        self._up.set()
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin watching the (started) server."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="llm-supervisor")

    async def stop(self) -> None:
        """Stop watching (before the server is stopped on purpose). Cancel-safe, idempotent."""
        watcher, self._watcher = self._watcher, None
        self.state = "stopped"
        self._up.set()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def wait_running(self, timeout_s: float) -> None:
        """Return once the server serves; raise :class:`EngineUnavailableError` if it has failed,
        or is still restarting after ``timeout_s``."""
        if self.state == "restarting":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), timeout_s)
        if self.state != "running":
            raise EngineUnavailableError(self._down_message())

    async def explain(self, error: EngineUnavailableError) -> EngineUnavailableError:
        """The error of a reply the endpoint failed: says so when the child died under it.

        A dying process closes its sockets a moment before it can be reaped: give it that moment."""
        if self.state == "running" and self._server.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_exit(), _DYING_S)
        ended = self._server.exit_description()
        if ended is None and self.state == "running":
            return error
        then = "restart the agent" if self.state == "failed" else "it is being restarted; try again in a moment"
        return EngineUnavailableError(f"{self._name()} stopped during the reply ({ended or self.last_exit}): {then}")

    def _name(self) -> str:
        return f"the embedded LLM server (llama.cpp, model {self._llm.model!r})"

    def _down_message(self) -> str:
        if self.state == "failed":
            return (
                f"{self._name()} is down ({self.last_exit}) after {self.max_restarts} restarts in "
                f"{self.window_s:g} s (llm.max_restarts): restart the agent"
            )
        if self.state == "stopped":
            return f"{self._name()} has been stopped"
        return f"{self._name()} is restarting ({self.last_exit}): try again in a moment"

    def health(self) -> dict[str, Any]:
        return {"state": self.state, "pid": self._server.pid, "restarts": self.restarts, "last_exit": self.last_exit}

    async def _watch(self) -> None:
        while True:
            code = await self._server.wait_exit()
            self.last_exit = describe_exit(code)
            self.state = "restarting"
            self._up.clear()
            logger.error(
                "the embedded LLM server pid %s died (%s); restarting it. Its last output:\n%s",
                self._server.pid,
                self.last_exit,
                self._server.stderr_tail(),
            )
            if not await self._restart():
                self.state = "failed"
                self._up.set()
                logger.error(
                    "the embedded LLM server is down: %d restarts in %g s (llm.max_restarts); replies will fail "
                    "until the agent is restarted",
                    self.max_restarts,
                    self.window_s,
                )
                return
            self.state = "running"
            self._up.set()

    async def _restart(self) -> bool:
        """Attempts until one works or the window's budget is spent; True once serving."""
        pause = _FIRST_PAUSE_S
        while self._spend_attempt():
            await asyncio.sleep(pause)
            began = time.monotonic()
            try:
                await self._server.restart()
            except EngineUnavailableError as exc:
                logger.error("restarting the embedded LLM server failed: %s", exc)
                pause = min(2 * pause, _LONGEST_PAUSE_S)
                continue
            if self._server.base_url != self._llm.base_url:
                await self._llm.retarget(self._server.base_url)
            self.restarts += 1
            logger.warning(
                "the embedded LLM server is back (pid %s, restart %d, %.1f s)",
                self._server.pid,
                self.restarts,
                time.monotonic() - began,
            )
            return True
        return False

    def _spend_attempt(self) -> bool:
        now = time.monotonic()
        while self._attempts and now - self._attempts[0] > self.window_s:
            self._attempts.popleft()
        if len(self._attempts) >= self.max_restarts:
            return False
        self._attempts.append(now)
        return True


class SupervisedLLM:
    """A :class:`~cosyagent.engines.base.ChatLLM` on the supervised embedded server, for one
    conversation: with ``slots``, its requests go to the slot that holds its history."""

    def __init__(
        self, llm: OpenAICompatibleLLM, supervisor: LLMSupervisor, wait_s: float, slots: LLMSlots | None = None
    ) -> None:
        self._llm = llm
        self._supervisor = supervisor
        self._wait_s = wait_s
        self._slot: Callable[[], contextlib.AbstractContextManager[int | None]] = (
            functools.partial(slots.held, slots.conversation())
            if slots is not None
            else lambda: contextlib.nullcontext(None)
        )
        self.model = llm.model

    @property
    def info(self) -> EngineInfo:
        return self._llm.info

    async def stream_chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> AsyncIterator[str]:
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
    ) -> AsyncGenerator[ChatEvent, None]:
        """The server's reply (text and tool-call pieces), once it runs; a death mid-reply is explained."""
        await self._supervisor.wait_running(self._wait_s)
        extra: dict[str, Any] = {}
        with self._slot() as slot:
            if slot is not None:
                extra["id_slot"] = slot
            stream = self._llm.stream_chat_events(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                max_tokens=max_tokens,
                temperature=temperature,
                extra_body=extra or None,
            )
            try:
                async for event in stream:
                    yield event
            except EngineUnavailableError as exc:
                raise await self._supervisor.explain(exc) from exc
            finally:
                await stream.aclose()

    async def aclose(self) -> None:
        """The client belongs to the runtime: nothing to close here."""
