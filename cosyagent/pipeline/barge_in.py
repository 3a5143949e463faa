"""Barge-in as a sans-I/O policy: when the user's speech pauses, resumes or cuts off the agent.

Feed it the turn detector's events and whether the agent is speaking (a reply is running
and the session lets speech interrupt it); it answers with what the reply's audio should
do. Speech suspected over a reply (a frame before a turn starts) *holds* the audio until the
policy can tell a word from a cough: confirmed speech *interrupts* the reply, speech that is
dismissed or stops before that *resumes* it. It keeps one flag and never touches audio itself.
"""

from __future__ import annotations

from typing import Literal

from cosyagent.pipeline.turns import (
    SpeechConfirmed,
    SpeechDismissed,
    SpeechStarted,
    SpeechStopped,
    SpeechSuspected,
    TurnEvent,
)

BargeInDecision = Literal["hold", "resume", "interrupt"]


class BargeInPolicy:
    def __init__(self) -> None:
        self._holding = False

    @property
    def holding(self) -> bool:
        """True while unconfirmed speech pauses the reply's audio."""
        return self._holding

    def on_turn(self, turn: TurnEvent, *, agent_speaking: bool) -> BargeInDecision | None:
        """What the reply's audio does after ``turn``; None: nothing changes."""
        if isinstance(turn, SpeechSuspected):
            return self._hold() if agent_speaking else None
        if isinstance(turn, SpeechStarted):
            return self._hold() if agent_speaking else self.release()
        if isinstance(turn, SpeechDismissed):
            return self.release()  # a click: the agent carries on
        if isinstance(turn, SpeechConfirmed):
            if agent_speaking:
                self._holding = False
                return "interrupt"
            return self.release()
        if isinstance(turn, SpeechStopped):
            return self.release()  # too short to interrupt: the agent carries on
        return None

    def release(self) -> BargeInDecision | None:
        """The turn is over some other way (committed, cleared, the reply ended): stop holding."""
        if not self._holding:
            return None
        self._holding = False
        return "resume"

    def _hold(self) -> BargeInDecision | None:
        if self._holding:
            return None
        self._holding = True
        return "hold"
