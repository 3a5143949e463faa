"""Every Realtime server event the end-to-end tests make the server send, checked against
openai-python's own models (``openai.types.realtime``).

:func:`record_server_events` wraps the one function both Realtime transports (WebSocket and
the WebRTC data channel) turn events into JSON with, so an in-process server's events are
seen exactly as sent. :func:`mismatches` validates each with pydantic against the SDK's
``RealtimeServerEvent`` union: a wrong or missing field, a wrong literal or an unknown
event type is reported. The SDK's models allow extra fields, so our documented extensions
inside known events (``x_cosyagent_timings_ms``) pass; event types of our own are listed in
:data:`EXTENSION_EVENTS`, each with where it is documented.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydantic
import pytest
from openai.types.realtime.realtime_client_event import RealtimeClientEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent

import cosyagent.transports.base as transport_base
import cosyagent.transports.sideband as sideband_transport
import cosyagent.transports.webrtc as webrtc_transport

EXTENSION_EVENTS: dict[str, str] = {
    # type -> where the README documents it (none of them is sent unless the client opts in)
    "response.output_audio_timestamps.delta": "README: word and viseme timings (issue #16)",
}
_KEEP_PER_TYPE = 50  # enough to see every shape an event takes, bounded for long tests

_SERVER_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)


def event_types(union: Any) -> list[str]:
    """The ``type`` literals of a discriminated union of the SDK's event models."""
    members = typing.get_args(union)
    if typing.get_origin(union) is typing.Annotated:
        members = typing.get_args(members[0])
    return [typing.get_args(member.model_fields["type"].annotation)[0] for member in members]


SERVER_EVENT_TYPES = event_types(RealtimeServerEvent)
CLIENT_EVENT_TYPES = event_types(RealtimeClientEvent)


@contextmanager
def record_server_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The events sent while the block runs, by any in-process server (at most 50 per type)."""
    seen: list[dict[str, Any]] = []
    per_type: dict[str, int] = {}
    original = transport_base.json_event

    def recording(event: dict[str, Any]) -> str:
        text = original(event)
        kind = str(event.get("type"))
        if per_type.get(kind, 0) < _KEEP_PER_TYPE:
            per_type[kind] = per_type.get(kind, 0) + 1
            seen.append(json.loads(text))
        return text

    monkeypatch.setattr(transport_base, "json_event", recording)
    monkeypatch.setattr(webrtc_transport, "json_event", recording)
    monkeypatch.setattr(sideband_transport, "json_event", recording)
    yield seen


def mismatches(events: list[dict[str, Any]]) -> list[str]:
    """One line per event that the SDK's models reject."""
    problems = []
    for event in events:
        kind = event.get("type")
        if kind in EXTENSION_EVENTS:
            continue
        try:
            _SERVER_EVENTS.validate_python(event)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            problems.append(f"{kind}: {where}: {first['msg']} (event {json.dumps(event)[:300]})")
    return problems
