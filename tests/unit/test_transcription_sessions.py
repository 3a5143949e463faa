"""Transcription sessions (OpenAI's `session.type: "transcription"`, live captions): the turns of
real speech are detected and transcribed, and nothing answers them. Real Silero VAD; the ASR
result is handed to the core as the I/O layer would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cosyagent.agent.captions import Captions
from cosyagent.agent.events import CancelTranscribe, PrefetchReply, ReadAhead, StartResponse, Transcribe
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_config import SessionConfig, TurnDetection
from cosyagent.agent.session_fields import InvalidSessionValue
from cosyagent.engines.vad import SileroVAD
from tests.unit.test_realtime_core import append, error_of, make_core, only, sent, speech_24k, types, vad
from tests.unit.test_reply_ahead import paused

__all__ = ["vad"]  # the module's real Silero VAD (test_realtime_core)

QUESTION = "How do I get to Dublin?"
DETECTION = {"type": "server_vad", "silence_duration_ms": 600}


def transcribing(vad: SileroVAD, **detection: Any) -> RealtimeCore:
    core = make_core(vad, turn_detection=TurnDetection(**detection))
    (updated,) = sent(core.receive({"type": "session.update", "session": {"type": "transcription"}}))
    assert updated["type"] == "session.updated" and updated["session"]["type"] == "transcription"
    return core


def test_a_transcription_session_is_described_by_the_transcription_schema() -> None:
    config = SessionConfig(model="m", instructions="Be brief.", voice="v").updated(
        {"type": "transcription", "audio": {"input": {"turn_detection": DETECTION}}}, lambda _: True
    )
    session = config.to_dict("sess_1")
    assert session["type"] == "transcription" and session["object"] == "realtime.transcription_session"
    assert set(session) == {"type", "object", "id", "audio"}  # no voice, instructions or tools
    assert set(session["audio"]) == {"input"}
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 600,
    }  # nothing about responses: there are none
    assert not config.replies_to_turns
    assert config.updated({"audio": {"input": {}}}, lambda _: True).session_type == "transcription"  # type kept


@pytest.mark.parametrize(
    ("session", "param", "code"),
    [
        ({"instructions": "Be brief."}, "session.instructions", "unknown_parameter"),
        ({"audio": {"output": {"voice": "v"}}}, "session.audio.output", "unknown_parameter"),
        ({"audio": {"input": {"transcription": None}}}, "session.audio.input.transcription", "invalid_value"),
        (
            {"audio": {"input": {"turn_detection": DETECTION | {"idle_timeout_ms": 6000}}}},
            "session.audio.input.turn_detection.idle_timeout_ms",
            "invalid_value",
        ),
        ({"include": ["item.input_audio_transcription.logprobs"]}, "session.include", "unsupported_parameter"),
    ],
)
def test_what_a_transcription_session_has_not_is_refused_by_name(
    session: dict[str, Any], param: str, code: str
) -> None:
    config = SessionConfig(model="m", instructions="", voice="v")
    with pytest.raises(InvalidSessionValue) as refused:
        config.updated({"type": "transcription"} | session, lambda _: True)
    assert (refused.value.param, refused.value.code) == (param, code), str(refused.value)


def test_turns_are_transcribed_and_never_answered(vad: SileroVAD) -> None:
    core = transcribing(vad, silence_duration_ms=1000)  # create_response: true, a realtime session's default
    actions = append(core, np.concatenate([speech_24k(), np.zeros(36000, dtype=np.float32)]))
    assert types(actions)[0] == "input_audio_buffer.speech_started"
    assert {"input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "conversation.item.added"} <= set(
        types(actions)
    )
    cancelled = {a.job_id for a in actions if isinstance(a, CancelTranscribe)}  # a pause's, the speaker going on
    (job,) = [a for a in actions if isinstance(a, Transcribe) and a.job_id not in cancelled]
    done = core.transcription_done(job.job_id, QUESTION, 2.8)
    assert types(done) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert sent(done)[0]["delta"] == sent(done)[1]["transcript"] == QUESTION
    assert not [a for a in actions + done if isinstance(a, StartResponse)]
    assert core.read_ahead("item_x", QUESTION) == []  # the LLM is never asked to read ahead


def test_a_pause_asks_the_llm_nothing_ahead(vad: SileroVAD) -> None:
    core = transcribing(vad, silence_duration_ms=1000)
    job = paused(core)
    assert not [a for a in core.transcription_done(job.job_id, QUESTION, 1.8) if isinstance(a, PrefetchReply)]


@pytest.mark.parametrize("event", [{"type": "response.create"}, {"type": "response.cancel"}])
def test_response_events_are_refused_with_why(vad: SileroVAD, event: dict[str, Any]) -> None:
    error = error_of(transcribing(vad).receive(event | {"event_id": "e1"}))
    assert (error["code"], error["param"], error["event_id"]) == ("invalid_event", "type", "e1")
    assert "transcription session" in error["message"] and "makes no responses" in error["message"]


def test_the_type_is_fixed_once_the_conversation_has_begun(vad: SileroVAD) -> None:
    core = transcribing(vad)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello."}]}
    core.receive({"type": "conversation.item.create", "item": item})
    error = error_of(core.receive({"type": "session.update", "session": {"type": "realtime"}}))
    assert error["param"] == "session.type" and "cannot change" in error["message"]
    assert core.config.session_type == "transcription"
    # A fresh session may still become either.
    fresh = transcribing(vad)
    fresh.receive({"type": "session.update", "session": {"type": "realtime"}})
    assert fresh.config.session_type == "realtime" and fresh.config.replies_to_turns


def test_read_ahead_is_asked_in_a_realtime_session(vad: SileroVAD) -> None:
    # The contrast of the two tests above: the same core in a realtime session does ask.
    core = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000))
    assert [a for a in core.read_ahead("item_x", QUESTION) if isinstance(a, ReadAhead)]
    job = paused(core)
    only(core.transcription_done(job.job_id, QUESTION, 1.8), PrefetchReply)


def test_captions_tell_the_words_two_takes_agree_on() -> None:
    captions = Captions()
    assert captions.heard_so_far("item_1", "Who's going to am") is None  # a first take: nothing to agree with
    assert captions.heard_so_far("item_1", "Who's going to implement a") == "Who's going to"  # "am": cut short
    assert captions.heard_so_far("item_1", "Who's going to implement a four percent") == " implement a"
    assert captions.heard_so_far("item_1", "Who is going to implement a four percent global") is None  # revised
    rest = captions.finished("item_1", "Who's going to implement a four percent global wealth tax?")
    assert rest == " four percent global wealth tax?"
    assert captions.finished("item_2", "Hello.") == "Hello."  # nothing told: all of it
    captions.heard_so_far("item_3", "Thomas Pikachu said")
    assert captions.heard_so_far("item_3", "Thomas Pikachu said so") == "Thomas Pikachu said"
    assert captions.finished("item_3", "Thomas Picetti said so.") is None  # revised: `completed` has it
    assert captions.finished("item_4", "") is None


def test_words_are_told_while_the_speaker_talks_and_the_rest_when_the_turn_ends(vad: SileroVAD) -> None:
    core = transcribing(vad, silence_duration_ms=1000)
    speech = speech_24k()
    actions = append(core, speech[: 24 * 1500])
    (item_id,) = [e["item_id"] for e in sent(actions) if e["type"] == "input_audio_buffer.speech_started"]
    assert core.heard_so_far(item_id, "And says, ha") == []  # a first draft, as the session hands it on
    told = sent(core.heard_so_far(item_id, "And says, how do"))  # the next one agrees on two words
    assert [(e["type"], e["item_id"], e["delta"]) for e in told] == [
        ("conversation.item.input_audio_transcription.delta", item_id, "And says,")
    ]
    actions = append(core, np.concatenate([speech[24 * 1500 :], np.zeros(36000, dtype=np.float32)]))
    cancelled = {a.job_id for a in actions if isinstance(a, CancelTranscribe)}
    (job,) = [a for a in actions if isinstance(a, Transcribe) and a.job_id not in cancelled]
    done = core.transcription_done(job.job_id, "And says, how do I get to Dublin?", 2.8)
    assert types(done) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert "".join(e["delta"] for e in told + sent(done)[:1]) == sent(done)[1]["transcript"]
    # A realtime session with transcription off: nothing is told while they talk either.
    quiet = make_core(vad)
    quiet.receive({"type": "session.update", "session": {"audio": {"input": {"transcription": None}}}})
    assert quiet.heard_so_far(item_id, "And says, how") == []


def test_a_pause_s_transcript_tells_the_words_so_far(vad: SileroVAD) -> None:
    core = transcribing(vad, silence_duration_ms=1000)
    job = paused(core)
    assert core.heard_so_far(job.item_id, "And says, how do") == []  # the draft before the pause
    told = sent(core.transcription_done(job.job_id, "And says, how do I get to Dublin?", 1.8))
    assert [e["delta"] for e in told] == ["And says, how do"]
