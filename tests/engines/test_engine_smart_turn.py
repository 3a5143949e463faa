"""Smart Turn v3.2 (the ONNX file inside pipecat-ai) on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from cosyagent.engines.base import CancelToken, EngineCancelled
from cosyagent.engines.smart_turn import SAMPLE_RATE, SmartTurn
from tests.support import read_clip


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    engine = SmartTurn()
    engine.load()
    return engine


def test_a_finished_question_is_a_finished_turn(smart_turn: SmartTurn) -> None:
    question = read_clip("en_dublin_q.wav", SAMPLE_RATE)[: int(2.6 * SAMPLE_RATE)]  # "...how do I get to Dublin?"
    assert smart_turn.predict(question) > 0.8


def test_speech_cut_off_mid_word_is_not(smart_turn: SmartTurn) -> None:
    # The whole clip ends 0.2 s into the speaker's next word.
    assert smart_turn.predict(read_clip("en_dublin_q.wav", SAMPLE_RATE)) < 0.2
    # "Who's going to implement a 4% ..." stopped after two seconds.
    assert smart_turn.predict(read_clip("en_wealth_tax_q.wav", SAMPLE_RATE)[: 2 * SAMPLE_RATE]) < 0.5


def test_longer_audio_keeps_only_the_last_eight_seconds(smart_turn: SmartTurn) -> None:
    question = read_clip("en_dublin_q.wav", SAMPLE_RATE)[: int(2.6 * SAMPLE_RATE)]
    padded = np.concatenate([read_clip("en_lecture_60s.wav", SAMPLE_RATE)[: 20 * SAMPLE_RATE], question])
    assert smart_turn.predict(padded) == pytest.approx(smart_turn.predict(padded[-8 * SAMPLE_RATE :]), abs=1e-5)


async def test_runs_off_the_event_loop_and_a_cancelled_call_is_skipped(smart_turn: SmartTurn) -> None:
    question = read_clip("en_dublin_q.wav", SAMPLE_RATE)[: int(2.6 * SAMPLE_RATE)]
    assert await smart_turn.probability(question) > 0.8
    token = CancelToken()
    token.cancel()
    with pytest.raises(EngineCancelled):
        await smart_turn.probability(question, cancel=token)
    assert smart_turn.executor.queue_depth == 0
