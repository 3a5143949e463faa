"""The sans-I/O core's out-of-band responses (conversation "none", input, metadata), user
messages with input_audio content, and server_vad's idle_timeout_ms, driven with plain dicts.

As in test_realtime_core: the VAD is the real Silero model; ASR and LLM results are handed
to the core as the I/O layer would.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from cosyagent.agent.events import Action, StartResponse, Transcribe
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_config import TurnDetection
from cosyagent.engines.vad import SileroVAD
from tests.support import pcm16
from tests.unit.test_realtime_core import append, error_of, make_core, only, sent, speech_24k, types, vad

__all__ = ["vad"]  # the module-scoped Silero fixture


def text_item(text: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}], **extra}


def audio_item(audio_24k: np.ndarray, **part: Any) -> dict[str, Any]:
    content = {"type": "input_audio", "audio": base64.b64encode(pcm16(audio_24k)).decode(), **part}
    return {"type": "message", "role": "user", "content": [content]}


def create(core: RealtimeCore, item: dict[str, Any]) -> list[Action]:
    return core.receive({"type": "conversation.item.create", "item": item})


def finish_text(core: RealtimeCore, start: StartResponse, text: str) -> dict[str, Any]:
    actions = core.response_text(start.response_id, text) + core.response_finished(start.response_id)
    assert not [t for t in types(actions) if t.startswith("conversation.item.")], types(actions)
    done: dict[str, Any] = sent(actions)[-1]
    assert done["type"] == "response.done"
    return done


# --- out-of-band responses ---------------------------------------------------------------------


def test_an_out_of_band_response_reads_the_conversation_and_leaves_it_untouched(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    create(core, text_item("My flight to Dublin was cancelled."))
    before = [item.id for item in core.conversation]
    response = {
        "conversation": "none",
        "output_modalities": ["text"],
        "instructions": "Classify the user's mood in one word.",
        "metadata": {"topic": "mood", "turn": "1"},
    }
    actions = core.receive({"type": "response.create", "response": response})
    start = only(actions, StartResponse)
    assert start.messages == [
        {"role": "system", "content": "Classify the user's mood in one word."},
        {"role": "user", "content": "My flight to Dublin was cancelled."},
    ]
    created = sent(actions)[0]["response"]
    assert created["conversation_id"] is None and created["metadata"] == {"topic": "mood", "turn": "1"}
    assert "conversation.item.added" not in types(actions)  # its item is not the conversation's

    done = finish_text(core, start, "Frustrated.")
    assert done["response"]["status"] == "completed" and done["response"]["conversation_id"] is None
    assert done["response"]["metadata"] == {"topic": "mood", "turn": "1"}
    assert done["response"]["output"][0]["content"][0]["text"] == "Frustrated."
    assert [item.id for item in core.conversation] == before  # the default conversation never saw it
    # The next in-band response's context does not hold the classification either.
    start = only(core.receive({"type": "response.create"}), StartResponse)
    assert [m["content"] for m in start.messages[1:]] == ["My flight to Dublin was cancelled."]
    assert sent(core.response_finished(start.response_id))[-1]["response"]["conversation_id"] == "conv_default"


def test_input_replaces_the_conversation_as_context_with_references_and_new_items(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    create(core, text_item("first", id="item_first"))
    create(core, text_item("second"))
    create(core, text_item("third", role="assistant", id="item_third"))
    response = {
        "conversation": "none",
        "output_modalities": ["text"],
        "input": [
            {"type": "item_reference", "id": "item_third"},
            {"type": "item_reference", "id": "item_first"},
            text_item("Summarize that."),
            audio_item(np.zeros(4800), transcript="Briefly."),
        ],
    }
    start = only(core.receive({"type": "response.create", "response": response}), StartResponse)
    assert start.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "third"},
        {"role": "user", "content": "first"},
        {"role": "user", "content": "Summarize that."},
        {"role": "user", "content": "Briefly."},
    ]
    finish_text(core, start, "Done.")
    # An empty input: a context of the instructions alone.
    empty = {"conversation": "none", "output_modalities": ["text"], "input": []}
    start = only(core.receive({"type": "response.create", "response": empty}), StartResponse)
    assert start.messages == [{"role": "system", "content": "Be brief."}]


def test_input_with_the_default_conversation_adds_the_reply_to_it(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    create(core, text_item("Hello", id="item_hello"))
    response = {"output_modalities": ["text"], "input": [text_item("Say 'hi'.")]}
    actions = core.receive({"type": "response.create", "response": response})
    start = only(actions, StartResponse)
    assert [m["content"] for m in start.messages[1:]] == ["Say 'hi'."]
    assert "conversation.item.added" in types(actions)
    assert sent(actions)[0]["response"]["conversation_id"] == "conv_default"
    core.response_text(start.response_id, "hi")
    core.response_finished(start.response_id)
    assert [item.visible_text() for item in core.conversation] == ["Hello", "hi"]


@pytest.mark.parametrize(
    ("response", "code", "param"),
    [
        ({"conversation": "conv_42"}, "invalid_value", "response.conversation"),
        ({"input": "hello"}, "invalid_value", "response.input"),
        ({"input": [42]}, "invalid_value", "response.input[0]"),
        ({"input": [{"type": "item_reference", "id": "item_nope"}]}, "item_not_found", "response.input[0].id"),
        ({"input": [{"type": "item_reference"}]}, "item_not_found", "response.input[0].id"),
        ({"input": [{"type": "message", "role": "robot", "content": []}]}, "invalid_value", "response.input[0].role"),
        ({"input": [{"type": "message", "role": "user", "content": [{"type": "input_image"}]}]},
         "unsupported_content", "response.input[0].content[0]"),
        ({"input": [{"type": "mcp_call"}]}, "unsupported_item", "response.input[0].type"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{nope"}]},
         "invalid_value", "response.input[0].arguments"),
        ({"input": [audio_item(np.zeros(4800))]}, "unsupported_content", "response.input[0].content[0].transcript"),
        ({"metadata": "topic=mood"}, "invalid_value", "response.metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_value", "response.metadata"),
        ({"metadata": {"k" * 65: "v"}}, "invalid_value", "response.metadata"),
        ({"metadata": {"turn": 1}}, "invalid_value", "response.metadata.turn"),
        ({"metadata": {"note": "x" * 513}}, "invalid_value", "response.metadata.note"),
    ],
)  # fmt: skip
def test_bad_input_and_metadata_are_refused_precisely_and_the_session_goes_on(
    vad: SileroVAD, response: dict[str, Any], code: str, param: str
) -> None:
    core = make_core(vad, turn_detection=None)
    create(core, text_item("Hello"))
    error = error_of(core.receive({"type": "response.create", "event_id": "e7", "response": response}))
    assert (error["code"], error["param"], error["event_id"]) == (code, param, "e7"), error
    assert error["message"]
    assert only(core.receive({"type": "response.create"}), StartResponse)  # nothing was started: one can be now


def test_sixteen_metadata_pairs_of_the_longest_sizes_are_accepted(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    actions = core.receive({"type": "response.create", "response": {"metadata": metadata}})
    assert sent(actions)[0]["response"]["metadata"] == metadata


# --- input_audio items --------------------------------------------------------------------------


def test_an_input_audio_item_is_transcribed_and_the_llm_reads_its_words(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    actions = create(core, audio_item(speech_24k()) | {"id": "item_spoken"})
    assert types(actions) == ["conversation.item.added"]  # done once its words are known
    assert sent(actions)[0]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    job = only(actions, Transcribe)
    assert job.item_id == "item_spoken" and abs(job.audio.size / 16000 - 2.8) < 0.1
    assert core.receive({"type": "response.create"}) == []  # waits for the transcript, as after a commit
    actions = core.transcription_done(job.job_id, "How do I get to Dublin?", 2.8)
    assert types(actions)[:3] == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert sent(actions)[2]["item"]["content"][0]["transcript"] == "How do I get to Dublin?"
    start = only(actions, StartResponse)
    assert start.messages[-1] == {"role": "user", "content": "How do I get to Dublin?"}


def test_an_input_audio_item_with_its_transcript_is_not_transcribed_again(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    actions = create(core, audio_item(speech_24k(), transcript="How do I get to Dublin?"))
    assert types(actions) == ["conversation.item.added", "conversation.item.done"]
    assert not [a for a in actions if isinstance(a, Transcribe)]
    start = only(core.receive({"type": "response.create"}), StartResponse)
    assert start.messages[-1] == {"role": "user", "content": "How do I get to Dublin?"}


def test_input_audio_in_g711_is_decoded_in_the_sessions_format(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    core.receive({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}})
    mulaw = base64.b64encode(b"\xff" * 8000).decode()
    item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": mulaw}]}
    job = only(create(core, item), Transcribe)
    assert job.audio.size == 16000  # 1 s of 8 kHz mu-law, at the ASR rate


@pytest.mark.parametrize(
    ("content", "role", "code", "param"),
    [
        ([{"type": "input_audio", "audio": "@@not base64@@"}], "user", "invalid_base64", "item.content[0].audio"),
        ([{"type": "input_audio", "audio": "AAEC"}], "user", "invalid_audio", "item.content[0].audio"),  # 3 bytes
        ([{"type": "input_audio", "audio": "AAAA"}], "user", "invalid_audio", "item.content[0].audio"),  # too short
        ([{"type": "input_audio"}], "user", "invalid_value", "item.content[0].audio"),
        ([{"type": "input_audio", "audio": 5}], "user", "invalid_value", "item.content[0].audio"),
        ([{"type": "input_audio", "audio": "AAAA", "transcript": 5}], "user", "invalid_value",
         "item.content[0].transcript"),
        ([{"type": "input_audio", "audio": "AAAA"}], "assistant", "invalid_value", "item.role"),
        ([{"type": "input_text", "text": "hi"}, {"type": "input_audio", "audio": "AAAA"}], "user",
         "unsupported_content", "item.content"),
    ],
)  # fmt: skip
def test_bad_input_audio_items_are_refused_precisely(
    vad: SileroVAD, content: list[dict[str, Any]], role: str, code: str, param: str
) -> None:
    core = make_core(vad, turn_detection=None)
    error = error_of(create(core, {"type": "message", "role": role, "content": content}))
    assert (error["code"], error["param"]) == (code, param), error
    assert len(core.conversation) == 0
    assert types(create(core, text_item("still here"))) == ["conversation.item.added", "conversation.item.done"]


def test_input_audio_items_count_against_the_transcription_backlog(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None, max_pending_transcripts=2)
    for _ in range(2):
        only(create(core, audio_item(speech_24k())), Transcribe)
    assert error_of(create(core, audio_item(speech_24k())))["code"] == "transcription_backlog"


# --- idle_timeout_ms -------------------------------------------------------------------------------


def spoken_reply(core: RealtimeCore, seconds: float) -> None:
    create(core, text_item("Tell me something."))
    start = only(core.receive({"type": "response.create"}), StartResponse)
    core.response_audio(start.response_id, np.full(int(24000 * seconds), 0.1, dtype=np.float32), "Something.")
    while core.pending_audio_ms(start.response_id):
        core.pop_audio(start.response_id)
    core.response_finished(start.response_id)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(24000 * seconds), dtype=np.float32)


def test_silence_past_idle_timeout_after_the_reply_has_played_commits_and_responds(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection(idle_timeout_ms=5000))
    assert append(core, silence(6)) == []  # no response yet: nothing to time from
    spoken_reply(core, 2.0)  # its audio left while the input stood at 6 s: it has played by 8 s
    assert append(core, silence(6.9)) == []  # 12.9 s: 4.9 s of silence after the playback
    actions = append(core, silence(0.2))
    assert types(actions)[:4] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    triggered = sent(actions)[0]
    # (the input resampler holds back a few tens of ms)
    assert abs(triggered["audio_start_ms"] - 8000) < 60 and 12950 <= triggered["audio_end_ms"] <= 13100
    assert triggered["item_id"] == sent(actions)[1]["item_id"]
    assert sent(actions)[3]["item"]["content"] == [{"type": "input_audio", "transcript": ""}]
    start = only(actions, StartResponse)  # the agent prompts the user to go on
    assert start.script is None  # in words of the LLM's (no realtime.idle_message)
    assert not [a for a in actions if isinstance(a, Transcribe)]  # silence is not transcribed
    core.response_finished(start.response_id)
    assert "input_audio_buffer.timeout_triggered" in types(append(core, silence(5.1)))  # once per reply


def test_the_idle_timeout_says_the_servers_idle_message_when_it_has_one(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection(idle_timeout_ms=5000))
    core.config = replace(core.config, idle_message="Are you still there?")
    spoken_reply(core, 1.0)
    start = only(append(core, silence(6.5)), StartResponse)
    assert start.script == "Are you still there?"
    # Only the idle timeout's response is scripted: the next one is the LLM's again.
    core.response_finished(start.response_id)
    create(core, text_item("Yes, sorry."))
    assert only(core.receive({"type": "response.create"}), StartResponse).script is None


def test_the_idle_timeout_counts_from_the_end_of_playback_the_session_reports(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection(idle_timeout_ms=5000))
    create(core, text_item("Tell me something."))
    start = only(core.receive({"type": "response.create"}), StartResponse)
    append(core, silence(1))
    core.response_audio(start.response_id, np.full(24000 * 3, 0.1, dtype=np.float32), "Something.")
    while core.pending_audio_ms(start.response_id):
        core.pop_audio(start.response_id)
    core.response_finished(start.response_id, unplayed_ms=2500)  # the listener hears 2.5 s more
    assert append(core, silence(7.4)) == []  # 1 s + 2.5 s + 4.9 s
    triggered = sent(append(core, silence(0.2)))[0]
    assert triggered["type"] == "input_audio_buffer.timeout_triggered"
    assert abs(triggered["audio_start_ms"] - 3500) < 60


def test_speech_after_the_reply_stops_the_idle_timeout(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection(idle_timeout_ms=5000, create_response=False))
    spoken_reply(core, 1.0)
    actions = append(core, np.concatenate([silence(1), speech_24k(), silence(6)]))
    assert "input_audio_buffer.speech_started" in types(actions)
    assert "input_audio_buffer.timeout_triggered" not in types(actions)


def test_no_idle_timeout_without_the_setting(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection())
    spoken_reply(core, 1.0)
    assert append(core, silence(31)) == []


@pytest.mark.parametrize(
    ("detection", "message"),
    [
        ({"type": "server_vad", "idle_timeout_ms": 4999}, "5000-30000"),
        ({"type": "server_vad", "idle_timeout_ms": 30001}, "5000-30000"),
        ({"type": "server_vad", "idle_timeout_ms": 6000.5}, "integer"),
        ({"type": "server_vad", "idle_timeout_ms": True}, "integer"),
        ({"type": "semantic_vad", "idle_timeout_ms": 6000}, "only supported for server_vad"),
    ],
)
def test_idle_timeouts_outside_openais_range_are_refused(
    vad: SileroVAD, detection: dict[str, Any], message: str
) -> None:
    core = make_core(vad, turn_detection=TurnDetection())
    update = {"type": "session.update", "session": {"audio": {"input": {"turn_detection": detection}}}}
    error = error_of(core.receive(update))
    assert error["param"] == "session.audio.input.turn_detection.idle_timeout_ms" and message in error["message"]
    assert core.config.turn_detection == TurnDetection()


def test_idle_timeout_is_echoed_and_null_turns_it_off(vad: SileroVAD) -> None:
    core = make_core(vad)
    path = {"type": "server_vad", "idle_timeout_ms": 30000}
    (event,) = sent(core.receive({"type": "session.update", "session": {"audio": {"input": {"turn_detection": path}}}}))
    assert event["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 30000
    off = {"type": "server_vad", "idle_timeout_ms": None}
    (event,) = sent(core.receive({"type": "session.update", "session": {"audio": {"input": {"turn_detection": off}}}}))
    assert event["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] is None
    semantic = {"type": "semantic_vad"}
    core.receive({"type": "session.update", "session": {"audio": {"input": {"turn_detection": path}}}})
    core.receive({"type": "session.update", "session": {"audio": {"input": {"turn_detection": semantic}}}})
    assert core.config.turn_detection is not None and core.config.turn_detection.idle_timeout_ms is None
