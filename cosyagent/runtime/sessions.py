"""The one place Realtime sessions are admitted and built, for every transport.

A transport registers its name once (its metrics are present from the first scrape),
then asks :meth:`SessionRegistry.admit` for each connection: that builds the session's
core with the server's defaults and the configuration the request brought, checks the
server's admission limit (``server.capacity``, measured or set, capped by ``max_sessions``:
see :mod:`cosyagent.runtime.capacity`) and holds a slot. The :class:`Admission` then builds the
:class:`~cosyagent.agent.session.RealtimeSession` around the transport's audio sink,
and frees the slot once released. ``Runtime.active_sessions`` counts these slots.

On shutdown :meth:`SessionRegistry.drain` refuses new sessions and ends the live ones
(each client is told why; see :meth:`RealtimeSession.end`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cosyagent.agent.events import Send
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session import RealtimeSession, SendEvent
from cosyagent.pipeline.playout import AudioSink, MediaAudioSink
from cosyagent.runtime.speculation import room_to_read_ahead
from cosyagent.telemetry import SessionObserver

if TYPE_CHECKING:
    from cosyagent.runtime.process import Runtime

logger = logging.getLogger(__name__)


class SessionRefused(Exception):
    """The server is at its limit of sessions: a WebSocket gets an ``error`` event with
    ``code`` and close 1013, an HTTP request 503 with ``Retry-After: retry_after_s``.

    ``code`` is ``server_at_capacity`` (past ``server.capacity``) or ``session_limit``
    (past ``server.max_sessions``); ``message`` names the limit and where it comes from.
    """

    retry_after_s = 5

    def __init__(self, message: str, code: str = "session_limit") -> None:
        self.message = message
        self.code = code
        super().__init__(message)


class SessionConfigError(Exception):
    """The session configuration a request brought is refused (as session.update would be)."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param  # the field at fault, as session.update names it ("session.audio.output.speed")


SHUTTING_DOWN = "server_shutting_down"  # the error code of sessions ended (or refused) by a shutdown


class SessionRegistry:
    """The live sessions of one process, counted per transport."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._live: Counter[str] = Counter()
        self._sessions: set[RealtimeSession] = set()
        self._closing = False
        self._emptied = asyncio.Event()  # set whenever the last slot is freed
        self.admitted = 0  # sessions admitted since startup

    def register(self, transport: str) -> None:
        """A transport sessions can arrive on; its metric labels are present from now on."""
        self._live[transport] += 0
        self._runtime.telemetry.add_transport(transport)

    def __len__(self) -> int:
        return sum(self._live.values())

    def admit(
        self,
        transport: str,
        *,
        model: str | None,
        session: dict[str, Any] | None = None,
        audio_on_media_tracks: bool = False,
        greet: bool = False,
    ) -> Admission:
        """Build a core for a new session and hold a slot for it. Raises SessionConfigError
        when ``session`` (a session.update body) is refused, then SessionRefused when full.
        ``greet``: the session opens with the agent's reply (a phone call's greeting)."""
        if transport not in self._live:
            raise ValueError(f"transport {transport!r} is not registered")
        observer = self._runtime.telemetry.session_observer(transport)
        core = self._runtime.new_core(model, observer, audio_on_media_tracks=audio_on_media_tracks)
        if session:
            _configure(core, session)
        if self._closing:
            self._runtime.telemetry.count_refusal(transport, SHUTTING_DOWN)
            raise SessionRefused("the server is shutting down", SHUTTING_DOWN)
        limit = self._runtime.capacity.limit(self._runtime.config.server)
        if len(self) >= limit.sessions:
            self._runtime.telemetry.count_refusal(transport, limit.code)
            raise SessionRefused(limit.message, limit.code)
        self._live[transport] += 1
        self.admitted += 1
        return Admission(self._runtime, core, observer, self, transport, greet)

    def preview(self, model: str | None, session: dict[str, Any]) -> dict[str, Any]:
        """The ``session`` object a session admitted with these settings would start with;
        SessionConfigError when they are refused. Holds no slot."""
        core = self._runtime.new_core(model)
        if session:
            _configure(core, session)
        return core.config.to_dict(core.session_id)

    async def drain(self, timeout_s: float) -> int:
        """Refuse new sessions (``server_shutting_down``), end every live one (a reply in
        progress fails, the client gets an ``error`` saying the server is shutting down, a
        WebSocket then closes with 1001) and wait at most ``timeout_s`` for them to be gone.
        Returns how many slots were still held at the deadline."""
        self._closing = True
        for session in list(self._sessions):
            session.end("the server is shutting down: this session is closing", SHUTTING_DOWN)
        if len(self):
            self._emptied.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), timeout_s)
        if len(self):
            logger.warning("%d session(s) still open %g s into the shutdown", len(self), timeout_s)
        return len(self)

    def _track(self, session: RealtimeSession) -> None:
        self._sessions.add(session)

    def _free(self, transport: str, session: RealtimeSession | None) -> None:
        self._live[transport] -= 1
        if session is not None:
            self._sessions.discard(session)
        if not len(self):
            self._emptied.set()


class Admission:
    """One admitted session's slot: builds its session, frees the slot on release."""

    def __init__(
        self,
        runtime: Runtime,
        core: RealtimeCore,
        observer: SessionObserver,
        registry: SessionRegistry,
        transport: str,
        greet: bool = False,
    ) -> None:
        self._runtime = runtime
        self._greet = greet
        self._core = core
        self._observer = observer
        self._registry = registry
        self._transport = transport
        self._session: RealtimeSession | None = None
        self._released = False

    def session(self, sink: AudioSink, send: SendEvent) -> RealtimeSession:
        """The session on the transport's ``sink``; ``send`` delivers its events."""
        if isinstance(sink, MediaAudioSink) != self._core.audio_on_media_tracks:
            raise TypeError("a media sink needs a core admitted with audio_on_media_tracks, and only it")
        runtime = self._runtime
        engines = runtime.session_engines()
        realtime = runtime.config.realtime
        # The embedded server's own slots only: an external endpoint would bill every read.
        reads_ahead = realtime.read_ahead and runtime.llm_slots is not None
        session = RealtimeSession(
            self._core,
            engines,
            send,
            realtime.output_lead_ms,
            self._observer,
            sink=sink,
            reply_ahead=realtime.reply_ahead,
            read_ahead=(lambda: room_to_read_ahead(runtime.active_sessions)) if reads_ahead else None,
            greet=self._greet,
        )
        if not self._released:
            self._session = session
            self._registry._track(session)
        return session

    def release(self) -> None:
        """The session has ended (or never started): free its slot. Idempotent."""
        if not self._released:
            self._released = True
            self._registry._free(self._transport, self._session)

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def _configure(core: RealtimeCore, session: dict[str, Any]) -> None:
    """Apply a request's session configuration as a session.update would; refuse bad values."""
    for action in core.receive({"type": "session.update", "session": session}):
        if isinstance(action, Send) and action.event["type"] == "error":
            error = action.event["error"]
            raise SessionConfigError(f"session: {error['message']}", str(error["code"]), error.get("param"))
