"""The aiortc caller of the e2e tests: the generic parts live in :mod:`benchmarks.webrtc_caller`
(the bench's WebRTC driver uses the same caller); the test clips are here."""

from __future__ import annotations

from benchmarks.webrtc_caller import (
    RATE,
    Caller,
    ClipMicrophone,
    HeardFrame,
    accept_answer,
    loopback_candidates,
    make_offer,
)
from cosyagent.engines.base import AudioF32
from tests.support import read_clip

__all__ = [
    "QUESTION_CLIP",
    "RATE",
    "Caller",
    "ClipMicrophone",
    "HeardFrame",
    "accept_answer",
    "dublin_question",
    "loopback_candidates",
    "make_offer",
]

QUESTION_CLIP = "en_dublin_q.wav"


def dublin_question(rate: int) -> AudioF32:
    """The real clip "and says, how do I get to Dublin?" without its last 0.2 s: a cut-off
    fragment of the next word, which the VAD rightly takes for a second, tiny turn. Its
    empty transcript can make the core skip the reply to the real question (a core race,
    see the issue filed with this transport), which would make these tests flaky."""
    return read_clip(QUESTION_CLIP, rate)[: int(2.6 * rate)]
