"""uvicorn with a graceful drain: what `cosyagent serve` does on SIGTERM or SIGINT.

1. The listening sockets close: new connections are refused.
2. Every Realtime session is ended (:meth:`SessionRegistry.drain`): a reply in progress
   fails with ``server_shutting_down`` (``response.done`` status ``failed``), the client gets
   that ``error`` event and its WebSocket closes with 1001 "going away"; new sessions that
   slipped in are refused with the same code. At most ``server.drain_timeout_s``.
3. uvicorn's own shutdown: HTTP requests in flight get ``server.drain_timeout_s`` to finish,
   then are cancelled.
4. The app's lifespan ends: the engines stop, the embedded LLM server (llama.cpp) with them.

The process then exits with status 0 (uvicorn would re-raise the SIGTERM or SIGINT it caught,
and die by it or with a KeyboardInterrupt: a drained shutdown is a clean exit).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from cosyagent.runtime.sessions import SessionRegistry

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """A :class:`uvicorn.Server` that ends the Realtime sessions before it shuts down."""

    def __init__(self, config: uvicorn.Config, sessions: SessionRegistry, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._sessions = sessions
        self._drain_timeout_s = drain_timeout_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            with super().capture_signals():
                yield
            return
        # What uvicorn re-raises once it has shut down is ignored: the drain was the answer.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with super().capture_signals():
                yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        began = time.monotonic()
        for server in self.servers:
            server.close()  # no new connections while the sessions are told
        for sock in sockets or []:
            sock.close()
        sessions = len(self._sessions)
        left = await self._sessions.drain(self._drain_timeout_s)
        logger.info("ended %d session(s) in %.2f s (%d still open)", sessions, time.monotonic() - began, left)
        await super().shutdown(sockets)
        logger.info("shut down in %.2f s", time.monotonic() - began)
