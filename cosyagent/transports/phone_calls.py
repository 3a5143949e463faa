"""The live phone calls of one process, by their id in the call-control API: SIP calls and
carrier media streams alike.

A SIP call is known by the ``rtc_...`` id its ``realtime.call.incoming`` webhook named (from
the moment it is answered); a carrier stream by the carrier's own call id from its ``start``
message: Twilio's ``callSid``, Telnyx's ``call_control_id``, Exotel's ``call_sid``, Plivo's
``callId``, so the id a backend already has from the carrier's webhook is the one it uses
here. Each call is a :class:`PhoneCall`: its session can be followed and steered (the
sideband, :mod:`.sideband`) and hung up. Calls still ringing are not here: they have no
session yet (:mod:`.sip_calls` keeps them).

:class:`Followers` is what every kind shares for the sideband: each follower is a queue of
the events the call's session sends; one that falls :data:`MAX_FOLLOWER_BACKLOG` events
behind is dropped. :class:`FollowedCall` is the :class:`PhoneCall` side every transport's call
inherits: the inbox its session reads client events from, and its followers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cosyagent.agent.events import Event
from cosyagent.pipeline.playout import AudioSink
from cosyagent.transports.sip_control import CallStateError
from cosyagent.transports.webrtc_offer import CallError, CallNotFound

logger = logging.getLogger(__name__)

MAX_FOLLOWER_BACKLOG = 2048  # events a sideband client may fall behind before it is dropped
HANGUP_WAIT_S = 10.0  # a hang-up request returns once the call's session has ended, or after this
SIP = "sip"


class PhonePlayback(AudioSink):
    """A phone call plays the reply itself (the SIP call paces RTP; a carrier plays from its
    own buffer): the session's sink only passes on barge-in. ``hold`` comes the moment speech
    starts over the reply (the caller must hear the agent stop at once), ``resume`` when it
    was not a word after all (a cough: the reply goes on from where it stopped), ``clear``
    when it was (the reply is cut)."""

    def __init__(self, *, hold: Callable[[], None], resume: Callable[[], None], clear: Callable[[], None]) -> None:
        self._hold, self._resume, self._clear = hold, resume, clear

    def finish(self, response_id: str) -> None:
        pass

    def clear(self) -> None:
        self._clear()

    def hold(self) -> None:
        self._hold()

    def resume(self) -> None:
        self._resume()


class PhoneCall(Protocol):
    """What call control needs of a live call's media, whatever carries it."""

    @property
    def ended(self) -> bool: ...

    def watch(self) -> asyncio.Queue[Event | None]: ...

    def unwatch(self, watcher: asyncio.Queue[Event | None]) -> None: ...

    def post(self, message: str | bytes) -> None:
        """A client event for the call's session, unparsed (as if the caller's own client sent it)."""

    def hang_up(self) -> None:
        """End the session (idempotent); the transport then ends the call its own way."""


class Followers:
    """The sideband clients of one call: each a queue of every event the session sends from
    the moment it attached, None at the end (the call ended, or the follower fell behind)."""

    def __init__(self, label: str) -> None:
        self.label = label  # for the log: "sip call rtc_...", "twilio call CA..."
        self._queues: set[asyncio.Queue[Event | None]] = set()
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def watch(self) -> asyncio.Queue[Event | None]:
        """:meth:`unwatch` it when done."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if self._ended:
            queue.put_nowait(None)
        else:
            self._queues.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[Event | None]) -> None:
        self._queues.discard(queue)

    def publish(self, event: Event) -> None:
        for queue in list(self._queues):
            if queue.qsize() >= MAX_FOLLOWER_BACKLOG:
                logger.warning("%s: a sideband client fell behind: dropped", self.label)
                self._queues.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)

    def end(self) -> None:
        """The call ended: every follower gets None (idempotent)."""
        self._ended = True
        for queue in self._queues:
            queue.put_nowait(None)
        self._queues.clear()


class FollowedCall:
    """A call's inbox (client events for its session, None ends the session) and its sideband
    followers: what call control reaches, the same for SIP and carrier calls. The subclass runs
    the session on ``self._inbox.get``, publishes its events to ``self._followers`` and ends them."""

    def __init__(self, label: str) -> None:
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._followers = Followers(label)

    @property
    def ended(self) -> bool:
        return self._followers.ended

    def watch(self) -> asyncio.Queue[Event | None]:
        """A queue of every event the session sends from now on; None when the call has
        ended, or when the watcher fell too far behind. :meth:`unwatch` it when done."""
        return self._followers.watch()

    def unwatch(self, watcher: asyncio.Queue[Event | None]) -> None:
        self._followers.unwatch(watcher)

    def post(self, message: str | bytes) -> None:
        """A client event for the session (from a sideband client), unparsed."""
        if not self.ended:
            self._inbox.put_nowait(message.decode("utf-8", "replace") if isinstance(message, bytes) else message)

    def hang_up(self) -> None:
        """End the session (idempotent); the transport then ends the call its own way."""
        self._inbox.put_nowait(None)


@dataclass
class LiveCall:
    call_id: str
    kind: str  # the transport: "sip", "twilio", "telnyx", "exotel" or "plivo"
    media: PhoneCall
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set once it left the registry

    @property
    def label(self) -> str:
        return f"{self.kind} call {self.call_id}"


class CallIdInUse(Exception):
    """A second live call under an id already taken (e.g. a second stream of one carrier call)."""


class PhoneCalls:
    """The registry. Transports :meth:`add` a call once its session runs and :meth:`remove` it
    when the session has ended (in ``finally``); the HTTP layer looks calls up."""

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, call_id: str) -> LiveCall | None:
        return self._calls.get(call_id)

    def add(self, call_id: str, kind: str, media: PhoneCall) -> LiveCall:
        """Register a call; :class:`CallIdInUse` when the id is live already."""
        if call_id in self._calls:
            raise CallIdInUse(f"call {call_id!r} is live already ({self._calls[call_id].kind})")
        call = self._calls[call_id] = LiveCall(call_id, kind, media)
        return call

    def remove(self, call_id: str, media: PhoneCall) -> None:
        """The call of ``media`` has ended (a call of another media under the id stays)."""
        call = self._calls.get(call_id)
        if call is not None and call.media is media:
            del self._calls[call_id]
            call.gone.set()

    def carrier_call(self, call_id: str) -> LiveCall | None:
        """The live call of a carrier stream with this id (None: no such call, or a SIP call)."""
        call = self._calls.get(call_id)
        return call if call is not None and call.kind != SIP else None

    async def hang_up(self, call_id: str) -> None:
        """End a live call; returns once its session has ended (at most :data:`HANGUP_WAIT_S`).
        Raises CallNotFound. Cancel-safe (the call still ends)."""
        call = self._calls.get(call_id)
        if call is None:
            raise CallNotFound(f"no call {call_id!r}: it ended or never existed")
        logger.info("%s hung up by the API", call.label)
        call.media.hang_up()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.gone.wait(), HANGUP_WAIT_S)


def not_for_carrier_calls(call: LiveCall, action: str) -> CallError:
    """The error of ``accept``, ``reject`` or ``refer`` on a carrier's call (409)."""
    if action == "refer":
        how = (
            f"transfer it with {call.kind}'s own call-control API (e.g. Twilio: update the call with "
            "<Dial> TwiML; Telnyx: the transfer command)"
        )
    else:
        how = f"{call.kind} answered it with the stream its webhook asked for; there is nothing to {action}"
    return CallStateError(
        f"call {call.call_id!r} is a {call.kind} media-stream call: {how}", code="unsupported_for_carrier_call"
    )
