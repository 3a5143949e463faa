"""The registry of live phone calls and the sideband's followers, without sockets: the real
classes, with the smallest media a call can have (a Followers plus an end signal)."""

from __future__ import annotations

import asyncio

import pytest

from cosyagent.agent.events import Event
from cosyagent.transports.phone_calls import (
    MAX_FOLLOWER_BACKLOG,
    CallIdInUse,
    Followers,
    PhoneCalls,
    not_for_carrier_calls,
)
from cosyagent.transports.webrtc_offer import CallNotFound


class Media:
    """A call's media reduced to what call control touches."""

    def __init__(self) -> None:
        self.followers = Followers("test call")
        self.posted: list[str | bytes] = []
        self.hung_up = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self.followers.ended

    def watch(self) -> asyncio.Queue[Event | None]:
        return self.followers.watch()

    def unwatch(self, watcher: asyncio.Queue[Event | None]) -> None:
        self.followers.unwatch(watcher)

    def post(self, message: str | bytes) -> None:
        self.posted.append(message)

    def hang_up(self) -> None:
        self.hung_up.set()


def test_followers_get_every_event_then_none_and_a_slow_one_is_dropped() -> None:
    followers = Followers("twilio call CA1")
    fast, slow = followers.watch(), followers.watch()
    for n in range(MAX_FOLLOWER_BACKLOG):
        followers.publish({"type": "x", "n": n})
        fast.get_nowait()
    followers.publish({"type": "one too many"})
    backlog = [slow.get_nowait() for _ in range(slow.qsize())]
    assert len(backlog) == MAX_FOLLOWER_BACKLOG + 1 and backlog[-1] is None  # dropped: None last
    assert fast.get_nowait() == {"type": "one too many"}
    followers.end()
    assert fast.get_nowait() is None and followers.ended
    assert followers.watch().get_nowait() is None  # attaching after the end: told at once


async def test_registry_ids_removal_and_hang_up() -> None:
    calls = PhoneCalls()
    first, second = Media(), Media()
    live = calls.add("CA1", "twilio", first)
    assert calls.get("CA1") is live and calls.carrier_call("CA1") is live and live.label == "twilio call CA1"
    with pytest.raises(CallIdInUse, match=r"call 'CA1' is live already \(twilio\)"):
        calls.add("CA1", "twilio", second)
    calls.remove("CA1", second)  # another media under the id: the live call stays
    assert calls.get("CA1") is live

    async def the_stream_ends() -> None:
        await first.hung_up.wait()
        calls.remove("CA1", first)

    ending = asyncio.create_task(the_stream_ends())
    await asyncio.wait_for(calls.hang_up("CA1"), 5)  # returns once the call left the registry
    await ending
    assert calls.get("CA1") is None and live.gone.is_set() and len(calls) == 0
    with pytest.raises(CallNotFound, match="no call 'CA1': it ended or never existed"):
        await calls.hang_up("CA1")

    sip = calls.add("rtc_1", "sip", Media())
    assert calls.carrier_call("rtc_1") is None and calls.get("rtc_1") is sip


def test_accept_reject_refer_on_a_carrier_call_say_why_not() -> None:
    live = PhoneCalls().add("v3:abc", "telnyx", Media())
    refer = not_for_carrier_calls(live, "refer")
    assert (refer.status, refer.code) == (409, "unsupported_for_carrier_call")
    assert refer.message.startswith("call 'v3:abc' is a telnyx media-stream call: transfer it with telnyx's own")
    assert not_for_carrier_calls(live, "reject").message.endswith("there is nothing to reject")
