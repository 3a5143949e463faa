"""The barge-in policy alone: turn events and "agent speaking" in, hold / resume / interrupt out."""

from __future__ import annotations

import numpy as np

from cosyagent.pipeline.barge_in import BargeInPolicy
from cosyagent.pipeline.turns import (
    SpeechConfirmed,
    SpeechDismissed,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    SpeechSuspected,
)

NO_AUDIO = np.zeros(0, dtype=np.float32)


def test_speech_over_a_reply_holds_then_interrupts_once_confirmed() -> None:
    policy = BargeInPolicy()
    assert policy.on_turn(SpeechStarted(1000), agent_speaking=True) == "hold"
    assert policy.holding
    assert policy.on_turn(SpeechConfirmed(), agent_speaking=True) == "interrupt"
    assert not policy.holding


def test_a_cough_over_a_reply_holds_then_resumes() -> None:
    policy = BargeInPolicy()
    assert policy.on_turn(SpeechStarted(0), agent_speaking=True) == "hold"
    assert policy.on_turn(SpeechPaused(NO_AUDIO), agent_speaking=True) is None
    assert policy.on_turn(SpeechResumed(), agent_speaking=True) is None
    assert policy.holding  # still undecided
    assert policy.on_turn(SpeechStopped(300, NO_AUDIO), agent_speaking=True) == "resume"
    assert not policy.holding


def test_speech_while_the_agent_is_quiet_never_holds_or_interrupts() -> None:
    policy = BargeInPolicy()
    assert policy.on_turn(SpeechStarted(0), agent_speaking=False) is None
    assert policy.on_turn(SpeechConfirmed(), agent_speaking=False) is None
    assert policy.on_turn(SpeechStopped(900, NO_AUDIO), agent_speaking=False) is None
    assert not policy.holding


def test_a_hold_is_released_once_however_the_turn_ends() -> None:
    policy = BargeInPolicy()
    assert policy.on_turn(SpeechStarted(0), agent_speaking=True) == "hold"
    assert policy.on_turn(SpeechStarted(50), agent_speaking=True) is None  # already holding
    assert policy.release() == "resume"  # e.g. the client committed the buffer
    assert policy.release() is None
    policy.on_turn(SpeechStarted(0), agent_speaking=True)
    # The reply ended meanwhile: confirmed speech has nothing left to interrupt.
    assert policy.on_turn(SpeechConfirmed(), agent_speaking=False) == "resume"


def test_suspected_speech_holds_a_frame_sooner_and_a_dismissed_one_resumes() -> None:
    policy = BargeInPolicy()
    assert policy.on_turn(SpeechSuspected(), agent_speaking=True) == "hold"
    assert policy.on_turn(SpeechDismissed(), agent_speaking=True) == "resume"  # a click
    assert policy.on_turn(SpeechSuspected(), agent_speaking=True) == "hold"
    assert policy.on_turn(SpeechStarted(0), agent_speaking=True) is None  # still holding
    assert policy.on_turn(SpeechConfirmed(), agent_speaking=True) == "interrupt"


def test_suspected_speech_while_the_agent_is_quiet_changes_nothing() -> None:
    policy = BargeInPolicy()
    assert policy.on_turn(SpeechSuspected(), agent_speaking=False) is None
    assert policy.on_turn(SpeechDismissed(), agent_speaking=False) is None
    assert not policy.holding
