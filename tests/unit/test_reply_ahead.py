"""The core asks for a reply's LLM request during server_vad's silence wait (``PrefetchReply``):
exactly the request the automatic reply makes if the turn ends on that pause, dropped with its
transcript when the speaker goes on, and not asked for when no automatic reply would follow or
Smart Turn decides the turn (semantic_vad). Real speech through the real VAD."""

from __future__ import annotations

import numpy as np

from cosyagent.agent.events import Action, CancelTranscribe, PrefetchReply, ReadAhead, StartResponse, Transcribe
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_config import TurnDetection
from cosyagent.engines.vad import SileroVAD
from tests.support import read_clip
from tests.unit.test_realtime_core import _text_item, append, make_core, only, sent, speech_24k, vad

__all__ = ["vad"]  # the module's real Silero VAD (test_realtime_core)

QUESTION = "How do I get to Dublin?"


def silence(ms: int) -> np.ndarray:
    return np.zeros(24 * ms, dtype=np.float32)


def paused(core: RealtimeCore) -> Transcribe:
    """The question, then a pause shorter than the silence wait: its speculative transcript job."""
    actions = append(core, np.concatenate([speech_24k(), silence(300)]), chunk_ms=20)
    assert not [e for e in sent(actions) if e["type"] == "input_audio_buffer.speech_stopped"]
    dropped = {a.job_id for a in actions if isinstance(a, CancelTranscribe)}
    live = [a for a in actions if isinstance(a, Transcribe) and a.job_id not in dropped]
    assert len(live) == 1, actions
    return live[0]


def test_the_request_sent_ahead_is_the_one_the_reply_makes_when_the_turn_ends(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000))
    core.receive({"type": "conversation.item.create", "item": _text_item("Hi, I am in Cork.")})
    core.receive({"type": "session.update", "session": {"tools": [{"type": "function", "name": "get_route"}]}})
    job = paused(core)
    ahead = only(core.transcription_done(job.job_id, QUESTION, 1.8), PrefetchReply)
    assert ahead.job_id == job.job_id
    assert ahead.messages[-2:] == [
        {"role": "user", "content": "Hi, I am in Cork."},
        {"role": "user", "content": QUESTION},
    ]
    actions = append(core, silence(1100), chunk_ms=20)  # the silence wait ends the turn on this pause
    start = only(actions, StartResponse)
    assert (start.messages, start.max_tokens, start.audio) == (ahead.messages, ahead.max_tokens, ahead.audio)
    assert (start.tools, start.tool_choice) == (ahead.tools, ahead.tool_choice) and start.tools
    assert not [a for a in actions if isinstance(a, CancelTranscribe)]


def test_the_speaker_going_on_drops_it_with_the_transcript(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000))
    job = paused(core)
    only(core.transcription_done(job.job_id, QUESTION, 1.8), PrefetchReply)
    more = read_clip("en_lecture_60s.wav", 24000)[int(2.5 * 24000) : int(4.0 * 24000)]
    actions = append(core, more, chunk_ms=20)
    assert job.job_id in {a.job_id for a in actions if isinstance(a, CancelTranscribe)}
    assert not [a for a in actions if isinstance(a, StartResponse)]


def test_no_request_ahead_where_no_automatic_reply_would_follow(vad: SileroVAD) -> None:
    manual = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000, create_response=False))
    assert core_asks_ahead(manual, QUESTION) == []  # the client starts its replies
    assert (
        core_asks_ahead(make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000)), "") == []
    )  # heard no words

    semantic = make_core(vad, turn_detection=TurnDetection(type="semantic_vad", silence_duration_ms=1000))
    assert core_asks_ahead(semantic, QUESTION) == []  # Smart Turn most often decides ~50 ms later: no gain

    busy = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000, interrupt_response=False))
    busy.receive({"type": "conversation.item.create", "item": _text_item("Tell me a story.")})
    only(busy.receive({"type": "response.create"}), StartResponse)
    assert core_asks_ahead(busy, QUESTION) == []  # a reply is under way: this turn waits for it


def core_asks_ahead(core: RealtimeCore, transcript: str) -> list[Action]:
    job = paused(core)
    return [a for a in core.transcription_done(job.job_id, transcript, 1.8) if isinstance(a, PrefetchReply)]


def test_a_draft_s_prompt_is_the_reply_s_with_the_words_so_far_whatever_ends_the_turn(vad: SileroVAD) -> None:
    for detection in (
        TurnDetection(silence_duration_ms=1000),
        TurnDetection(type="semantic_vad", silence_duration_ms=1000),
    ):
        core = make_core(vad, turn_detection=detection)
        core.receive({"type": "session.update", "session": {"tools": [{"type": "function", "name": "get_route"}]}})
        job = paused(core)
        read = only(core.read_ahead(job.item_id, "How do I get"), ReadAhead)
        core.transcription_done(job.job_id, QUESTION, 1.8)
        start = only(append(core, silence(1100), chunk_ms=20), StartResponse)
        assert read.messages[:-1] == start.messages[:-1] and start.messages[-1]["content"] == QUESTION
        assert read.messages[-1] == {"role": "user", "content": "How do I get"}
        assert (read.audio, read.tools, read.tool_choice) == (start.audio, start.tools, start.tool_choice)


def test_no_read_ahead_where_no_automatic_reply_would_follow(vad: SileroVAD) -> None:
    manual = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000, create_response=False))
    assert manual.read_ahead(paused(manual).item_id, QUESTION) == []
    plain = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000))
    assert plain.read_ahead(paused(plain).item_id, "") == []  # no words yet
    busy = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=1000, interrupt_response=False))
    busy.receive({"type": "conversation.item.create", "item": _text_item("Tell me a story.")})
    only(busy.receive({"type": "response.create"}), StartResponse)
    assert busy.read_ahead(paused(busy).item_id, QUESTION) == []  # a reply is under way
