"""When a pause starts speculative ASR: 160 ms into it, or 96 ms when the server has room to spare
(``speculate_early``), and either way the pause and the stop commit the same audio, so that
the speculative transcript is the turn's. Scripted VAD probabilities, one per 32 ms frame."""

from __future__ import annotations

from typing import Any

import numpy as np

from cosyagent.pipeline.turns import (
    EARLY_SPECULATE_AFTER_MS,
    SPECULATE_AFTER_MS,
    SpeechPaused,
    SpeechResumed,
    SpeechStopped,
    TurnDetector,
    TurnEvent,
)
from tests.support import ScriptedVAD

FRAME = 512
FRAME_MS = 32
SPEECH, QUIET = 0.9, 0.05


class Room:
    """The ``speculate_early`` answer, counting how often it is asked."""

    def __init__(self, *answers: bool) -> None:
        self._answers = list(answers)
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self._answers.pop(0)


def run(probabilities: list[float], room: Room | None = None, **options: Any) -> list[tuple[int, TurnEvent]]:
    """Every event with the frame it came on; each frame's samples are its index, so the
    committed audio tells which frames it holds. ``room``: the ``speculate_early`` answers;
    ``options``: more of the detector's (``draft_ahead``)."""
    if room is not None:
        options["speculate_early"] = room
    detector = TurnDetector(
        ScriptedVAD(probabilities), threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500, **options
    )
    return [
        (index, event)
        for index in range(len(probabilities))
        for event in detector.push(np.full(FRAME, index, dtype=np.float32))
    ]


def frames_in(audio: np.ndarray) -> list[int]:
    return [int(value) for value in audio[::FRAME]]


def test_with_room_to_spare_the_pause_comes_96_ms_in_and_the_stop_commits_its_audio() -> None:
    room = Room(True)
    events = run([SPEECH] * 10 + [QUIET] * 20, room)
    pauses = [(i, e) for i, e in events if isinstance(e, SpeechPaused)]
    stops = [e for _, e in events if isinstance(e, SpeechStopped)]
    assert len(pauses) == 1 and len(stops) == 1 and room.asked == 1
    frame, pause = pauses[0]
    assert pause.silence_ms == EARLY_SPECULATE_AFTER_MS == 3 * FRAME_MS
    assert frame == 9 + 3  # the third quiet frame after the last speech frame (9)
    assert frames_in(pause.audio) == list(range(13))  # all speech plus a 96 ms tail
    assert np.array_equal(stops[0].audio, pause.audio)


def test_under_load_the_pause_waits_160_ms_and_keeps_a_160_ms_tail() -> None:
    room = Room(False)
    events = run([SPEECH] * 10 + [QUIET] * 20, room)
    pauses = [(i, e) for i, e in events if isinstance(e, SpeechPaused)]
    stops = [e for _, e in events if isinstance(e, SpeechStopped)]
    assert len(pauses) == 1 and room.asked == 1  # asked at the early mark, once
    frame, pause = pauses[0]
    assert pause.silence_ms == SPECULATE_AFTER_MS == 5 * FRAME_MS
    assert frame == 9 + 5
    assert frames_in(pause.audio) == list(range(15))
    assert np.array_equal(stops[0].audio, pause.audio)


def test_after_an_early_pause_is_resumed_the_next_pause_is_asked_again() -> None:
    room = Room(True, False)
    events = run([SPEECH] * 10 + [QUIET] * 4 + [SPEECH] * 5 + [QUIET] * 20, room)
    kinds = [type(e).__name__ for _, e in events if isinstance(e, SpeechPaused | SpeechResumed | SpeechStopped)]
    assert kinds == ["SpeechPaused", "SpeechResumed", "SpeechPaused", "SpeechStopped"]
    pauses = [e for _, e in events if isinstance(e, SpeechPaused)]
    assert [p.silence_ms for p in pauses] == [96, 160]
    stop = next(e for _, e in events if isinstance(e, SpeechStopped))
    assert frames_in(stop.audio) == list(range(19 + 5))  # the second pause's full tail
    assert np.array_equal(stop.audio, pauses[1].audio)
