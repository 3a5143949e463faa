"""The end-of-turn state machine's onset events, on scripted VAD probabilities (one per 32 ms frame).

Real speech through the real Silero VAD is covered by tests/unit/test_realtime_core.py; here the
frames are scripted so that each onset case is exact."""

from __future__ import annotations

import numpy as np

from cosyagent.pipeline.turns import (
    HOLD_AFTER_FRAMES,
    MIN_SPEECH_FRAMES,
    SpeechDismissed,
    SpeechStarted,
    SpeechSuspected,
    TurnDetector,
    TurnEvent,
)
from tests.support import ScriptedVAD

FRAME = 512


def events_per_frame(probabilities: list[float]) -> list[list[TurnEvent]]:
    detector = TurnDetector(ScriptedVAD(probabilities), threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    return [detector.push(np.zeros(FRAME, dtype=np.float32)) for _ in probabilities]


def test_speech_is_suspected_a_frame_before_a_turn_starts() -> None:
    assert HOLD_AFTER_FRAMES < MIN_SPEECH_FRAMES
    frames = events_per_frame([0.1, 0.9, 0.9, 0.9, 0.9])
    assert frames[:2] == [[], []]
    assert frames[2] == [SpeechSuspected()]  # the second frame above the threshold
    assert len(frames[3]) == 1 and isinstance(frames[3][0], SpeechStarted)  # the third
    assert frames[4] == []


def test_a_click_is_suspected_then_dismissed_and_starts_no_turn() -> None:
    frames = events_per_frame([0.9, 0.9, 0.2, 0.1, 0.9, 0.1])
    assert frames == [[], [SpeechSuspected()], [SpeechDismissed()], [], [], []]


def test_one_frame_alone_is_not_even_suspected() -> None:
    assert events_per_frame([0.9, 0.1, 0.9, 0.1]) == [[], [], [], []]
