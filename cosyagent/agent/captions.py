"""A turn's words told to the client while its speaker talks, as transcription deltas.

Each take of the turn so far (a draft, a pause's transcript) is compared with the one before:
the words both begin with are told, as a delta of those not told yet. Two takes agreeing is the
"local agreement" of streaming recognizers: a take's last words are often cut or misheard
(0.64 s of "implement" heard as "am", or "global?" where the audio stops), and the next take, with more
audio, corrects them; so the newer take's last word is never told either. Deltas
only ever append, so agreed words that revise what was told add nothing more, and the turn's
``completed`` transcript (always sent) has the final words; when the turn ends, its transcript
adds whatever it has beyond what was told.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

KEPT_ITEMS = 8  # turns in flight at once (one talking, the ones before still being transcribed)


@dataclass
class _Turn:
    told: str = ""
    last_take: list[str] = field(default_factory=list)


class Captions:
    """What of each recent turn's words the client has been told."""

    def __init__(self) -> None:
        self._turns: OrderedDict[str, _Turn] = OrderedDict()

    def heard_so_far(self, item_id: str, take: str) -> str | None:
        """The delta a take of the turn so far adds: the words it and the take before agree on,
        beyond those told; None: nothing new."""
        turn = self._turns.get(item_id) or _Turn()
        words = take.split()
        agreed: list[str] = []
        for mine, before in zip(words[:-1], turn.last_take, strict=False):  # not where its audio ends
            if mine != before:
                break
            agreed.append(mine)
        turn.last_take = words
        self._remember(item_id, turn)
        sure = " ".join(agreed)
        if len(sure) <= len(turn.told) or not sure.startswith(turn.told):
            return None
        delta, turn.told = sure[len(turn.told) :], sure
        return delta

    def finished(self, item_id: str, transcript: str) -> str | None:
        """The delta the turn's transcript adds to what was told (all of it when nothing was,
        none when it revised what was); the turn is then forgotten."""
        turn = self._turns.pop(item_id, None)
        told = turn.told if turn is not None else ""
        if not transcript.startswith(told) or len(transcript) <= len(told):
            return None
        return transcript[len(told) :]

    def _remember(self, item_id: str, turn: _Turn) -> None:
        self._turns[item_id] = turn
        self._turns.move_to_end(item_id)
        while len(self._turns) > KEPT_ITEMS:  # turns cleared or dropped before their transcript
            self._turns.popitem(last=False)
