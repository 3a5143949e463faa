"""A turn's words told to the client while its speaker talks, as transcription deltas.

Deltas only ever append, so each one adds a take's words to what was told before, and only
when the take begins with them: a take that revised an earlier word adds nothing, and the
turn's ``completed`` transcript (always sent) has the final words. A take's last word is held
back (the audio may end inside it: "Dub" for "Dublin"), except the turn's final transcript,
which adds whatever it has beyond what was told.
"""

from __future__ import annotations

from collections import OrderedDict

KEPT_ITEMS = 8  # turns in flight at once (one talking, the ones before still being transcribed)


class Captions:
    """What of each recent turn's words the client has been told."""

    def __init__(self) -> None:
        self._told: OrderedDict[str, str] = OrderedDict()

    def heard_so_far(self, item_id: str, take: str) -> str | None:
        """The delta a take of the turn so far adds (its words but the last); None: nothing new."""
        words = take.split()
        told = self._told.get(item_id, "")
        sure = " ".join(words[:-1])
        if len(sure) <= len(told) or not sure.startswith(told):
            return None
        self._remember(item_id, sure)
        return sure[len(told) :]

    def finished(self, item_id: str, transcript: str) -> str | None:
        """The delta the turn's transcript adds to what was told (all of it when nothing was,
        none when it revised what was); the turn is then forgotten."""
        told = self._told.pop(item_id, "")
        if not transcript.startswith(told) or len(transcript) <= len(told):
            return None
        return transcript[len(told) :]

    def _remember(self, item_id: str, told: str) -> None:
        self._told[item_id] = told
        self._told.move_to_end(item_id)
        while len(self._told) > KEPT_ITEMS:  # turns cleared or dropped before their transcript
            self._told.popitem(last=False)
