"""`cosyagent talk`: a Realtime API client that speaks a WAV file to a server, like a microphone.

The pieces are reusable (the latency benchmark imports them from here):

- :func:`load_clip` reads any WAV as 24 kHz mono and finds where the speech in it begins and
  ends (by energy), so latency is measured from the true end of speech, not from the end of
  the file.
- :class:`Microphone` streams audio the way a live microphone does: a 100 ms chunk is sent
  once its last sample has been "recorded" by the wall clock; sample ``n`` of the stream is
  spoken at ``start + n / 24000``.
- :class:`EventStream` reads server events in a task and stamps each with its arrival time.
- :class:`TurnCollector` is a sans-I/O state machine that turns the stamped events of one
  user turn into a :class:`TurnResult`; :func:`~cosyagent.talk.turn.collect_turn` drives it.

The command itself (:func:`run_talk`) adds what a person at a terminal needs:
:class:`~cosyagent.talk.console.LiveTranscript` prints the turn as it happens,
:mod:`~cosyagent.talk.playback` plays the reply through a player already on the machine, and
:func:`~cosyagent.talk.connection.checked_base_url` checks the URL before connecting.

Only the official ``openai`` SDK talks to the server; nothing here imports the server side.
"""

from cosyagent.talk.clip import RATE, Clip, TalkError, load_clip, speech_segments
from cosyagent.talk.command import run_talk
from cosyagent.talk.connection import EventStream, Microphone, Stamped, connect
from cosyagent.talk.turn import TurnCollector, TurnResult, elapsed_ms

__all__ = [
    "RATE",
    "Clip",
    "EventStream",
    "Microphone",
    "Stamped",
    "TalkError",
    "TurnCollector",
    "TurnResult",
    "connect",
    "elapsed_ms",
    "load_clip",
    "run_talk",
    "speech_segments",
]
