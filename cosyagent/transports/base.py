"""What every transport is made of: a serializer and an audio sink.

A transport carries one :class:`~cosyagent.agent.session.RealtimeSession` between the
network and the session, and nothing else:

- its :class:`Serializer` is the wire format apart from the socket (after pipecat's
  serializers): wire messages in become :data:`Inbound` (a client event for the session's
  core, or a command for the transport itself), the session's events out become messages;
- its audio sink carries out what the core decides about reply audio (play, hold, resume,
  clear, finish). :class:`AudioSink` (audio leaves as events the client plays) and
  :class:`MediaAudioSink` (audio plays on a media track of the transport's own) are
  defined in :mod:`cosyagent.pipeline.playout`, below the session that drives them, and
  re-exported here for transports.

Admitting a session (the server's limit) and building it belong to
:mod:`cosyagent.runtime.sessions`: a transport asks it for a session, giving its sink.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

from cosyagent.agent.events import Event
from cosyagent.pipeline.playout import AudioSink, MediaAudioSink

__all__ = [
    "AudioSink",
    "ClearPlayback",
    "ClientEvent",
    "Inbound",
    "JsonEvents",
    "MediaAudioSink",
    "Serializer",
    "json_event",
]


@dataclass(frozen=True)
class ClientEvent:
    """A message for the session's core, unparsed: the core answers a bad one with the
    precise ``error`` event."""

    message: str | bytes


@dataclass(frozen=True)
class ClearPlayback:
    """``output_audio_buffer.clear``: the caller wants the reply cut off now (a transport
    that plays the audio itself carries it out with its sink's clear)."""


Inbound = ClientEvent | ClearPlayback
InboundT = TypeVar("InboundT", covariant=True)


class Serializer(ABC, Generic[InboundT]):
    """A wire format. ``InboundT`` is what a wire message from the client becomes: the
    Realtime formats give :data:`Inbound`; a carrier's media stream (Twilio) its own
    commands (audio, marks, keys, hang-up)."""

    @abstractmethod
    def serialize(self, event: Event) -> list[str]:
        """One of the session's events as wire messages: one, several (reply audio cut into
        a carrier's frames) or none (an event the wire has no place for)."""

    @abstractmethod
    def deserialize(self, message: str | bytes) -> InboundT:
        """One wire message from the client."""


class JsonEvents(Serializer[ClientEvent]):
    """The Realtime API's own wire format: one JSON event per text message, every one of
    them for the session's core."""

    def serialize(self, event: Event) -> list[str]:
        return [json_event(event)]

    def deserialize(self, message: str | bytes) -> ClientEvent:
        return ClientEvent(message)


def json_event(event: Event) -> str:
    return json.dumps(event, separators=(",", ":"))
