"""While the speaker talks, the turn detector offers the utterance so far for a draft transcript
every DRAFT_EVERY_MS when the server has room (``draft_ahead``), on a frame of speech (a mark
that falls in a silence waits for the speech to go on: a pause's own transcript is taken anyway),
and the core turns each offer into a ``DraftTranscribe``
for the item that speech becomes. Scripted VAD frame by frame; then real speech, real VAD."""

from __future__ import annotations

import numpy as np

from cosyagent.agent.events import DraftTranscribe, Transcribe
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_config import SessionConfig, TurnDetection
from cosyagent.engines.vad import SileroVAD
from cosyagent.pipeline.turns import DRAFT_EVERY_MS, SpeechPaused, SpeechSoFar
from tests.support import dublin_question_alone
from tests.unit.test_realtime_core import TTS_RATE, VOICES, append, sent, vad
from tests.unit.test_turn_pauses import FRAME_MS, QUIET, SPEECH, Room, frames_in, run

__all__ = ["vad"]  # the module's real Silero VAD (test_realtime_core)

EVERY = DRAFT_EVERY_MS // FRAME_MS  # frames


def test_with_room_the_utterance_so_far_is_offered_every_640_ms_of_speech() -> None:
    room = Room(True, False, True)
    events = run([SPEECH] * (2 + 3 * EVERY + 5) + [QUIET] * 20, draft_ahead=room)
    offers = [(i, e) for i, e in events if isinstance(e, SpeechSoFar)]
    started_at = 2  # the third speech frame starts the turn
    assert room.asked == 3  # at each mark, and the answer is heeded
    assert [i for i, _ in offers] == [started_at + EVERY, started_at + 3 * EVERY]
    for index, offer in offers:
        assert frames_in(offer.audio) == list(range(index + 1))  # everything so far, from its first frame


def test_without_room_nothing_is_offered_and_a_mark_in_a_silence_waits_for_speech() -> None:
    assert not [
        e for _, e in run([SPEECH] * 60 + [QUIET] * 20, draft_ahead=Room(*[False] * 3)) if isinstance(e, SpeechSoFar)
    ]
    assert not [e for _, e in run([SPEECH] * 60 + [QUIET] * 20) if isinstance(e, SpeechSoFar)]  # default: never
    # Speech until 5 frames before the first mark, then a pause over it: asked when speech resumes.
    room = Room(True)
    first_mark = 2 + EVERY
    resumed_at = first_mark - 5 + 12
    events = run([SPEECH] * (first_mark - 5) + [QUIET] * 12 + [SPEECH] * 10 + [QUIET] * 20, draft_ahead=room)
    pauses = [i for i, e in events if isinstance(e, SpeechPaused)]
    assert pauses and pauses[0] < first_mark and room.asked == 1  # the next mark falls in the final silence
    assert [i for i, e in events if isinstance(e, SpeechSoFar)] == [resumed_at]
    # A mark that falls on the frame the silence wait would pause on is not offered there.
    events = run([SPEECH] * (first_mark - 4) + [QUIET] * 20, draft_ahead=Room())
    assert [i for i, e in events if isinstance(e, SpeechPaused)] == [first_mark]
    assert not [e for _, e in events if isinstance(e, SpeechSoFar)]


def test_the_core_asks_for_drafts_of_the_item_that_speech_becomes(vad: SileroVAD) -> None:
    config = SessionConfig(
        model="test",
        instructions="Be brief.",
        voice="jf_alpha",
        turn_detection=TurnDetection(silence_duration_ms=1000),
        transcription_language="en",
    )
    core = RealtimeCore(
        config,
        vad=vad.new_stream(),
        tts_sample_rate=TTS_RATE,
        voice_exists=VOICES.__contains__,
        draft_ahead=lambda: True,
    )
    question = dublin_question_alone(24000)
    actions = append(core, np.concatenate([question, np.zeros(24 * 1200, dtype=np.float32)]), chunk_ms=20)
    (started,) = [e for e in sent(actions) if e["type"] == "input_audio_buffer.speech_started"]
    drafts = [a for a in actions if isinstance(a, DraftTranscribe)]
    transcripts = [a for a in actions if isinstance(a, Transcribe)]
    assert len(drafts) >= 2, "2.8 s of speech: offered more than once"
    assert {(d.item_id, d.language) for d in drafts} == {(started["item_id"], "en")}
    final = transcripts[-1]
    assert final.item_id == started["item_id"]
    for draft in drafts:  # each a beginning of what is transcribed at the pause
        assert draft.audio.size < final.audio.size
        assert np.array_equal(draft.audio, final.audio[: draft.audio.size])
    none = RealtimeCore(config, vad=vad.new_stream(), tts_sample_rate=TTS_RATE, voice_exists=VOICES.__contains__)
    assert not [a for a in append(none, question, chunk_ms=20) if isinstance(a, DraftTranscribe)]
