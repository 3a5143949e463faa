"""The sans-I/O Realtime core, driven with plain dicts (no sockets, no event loop).

The VAD is the real Silero model on real speech; ASR and LLM results are handed to the
core as an I/O layer would, which is exactly the core's contract.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from cosyagent.agent.conversation import HEARD_ITEMS_KEPT
from cosyagent.agent.events import (
    Action,
    CancelResponse,
    CancelTranscribe,
    CancelTurnEnd,
    ClearAudio,
    FinishAudio,
    PredictTurnEnd,
    Send,
    StartResponse,
    Transcribe,
)
from cosyagent.agent.limits import CoreLimits
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_config import SessionConfig, TurnDetection
from cosyagent.audio.pcm import alaw_encode, ulaw_encode
from cosyagent.engines.smart_turn import SmartTurn
from cosyagent.engines.vad import SileroVAD
from cosyagent.pipeline.turns import SPECULATE_AFTER_MS
from tests.support import pcm16, read_clip

VOICES = {"jf_alpha", "jm_kumo"}
TTS_RATE = 24000


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    engine = SileroVAD()
    engine.load()
    return engine


def make_core(vad: SileroVAD, *, turn_detection: TurnDetection | None = None, **limits: Any) -> RealtimeCore:
    config = SessionConfig(model="test", instructions="Be brief.", voice="jf_alpha", turn_detection=turn_detection)
    return RealtimeCore(
        config,
        vad=vad.new_stream(),
        tts_sample_rate=TTS_RATE,
        voice_exists=VOICES.__contains__,
        limits=CoreLimits(**limits),
    )


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.event for a in actions if isinstance(a, Send)]


def types(actions: list[Action]) -> list[str]:
    return [e["type"] for e in sent(actions)]


def only(actions: list[Action], kind: type) -> Any:
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, actions
    return found[0]


def append(core: RealtimeCore, audio_24k: np.ndarray, chunk_ms: int = 100) -> list[Action]:
    data = pcm16(audio_24k)
    step = 24 * 2 * chunk_ms
    actions: list[Action] = []
    for offset in range(0, len(data), step):
        chunk = base64.b64encode(data[offset : offset + step]).decode()
        actions += core.receive({"type": "input_audio_buffer.append", "audio": chunk})
    return actions


def speech_24k() -> np.ndarray:
    return read_clip("en_dublin_q.wav", 24000)


def error_of(actions: list[Action]) -> dict[str, Any]:
    (event,) = sent(actions)
    assert event["type"] == "error", event
    return dict(event["error"])


def test_start_announces_the_session(vad: SileroVAD) -> None:
    (event,) = sent(make_core(vad).start())
    assert event["type"] == "session.created"
    session = event["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["voice"] == "jf_alpha"
    assert session["instructions"] == "Be brief."


def test_session_update_applies_and_echoes_changes(vad: SileroVAD) -> None:
    core = make_core(vad)
    update = {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": "Speak like a pirate.",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 300, "threshold": 0.6},
                },
                "output": {"voice": "jm_kumo", "format": {"type": "audio/pcma"}, "speed": 1.2},
            },
        },
    }
    (event,) = sent(core.receive(json.dumps(update)))
    assert event["type"] == "session.updated"
    audio = event["session"]["audio"]
    assert audio["input"]["turn_detection"]["silence_duration_ms"] == 300
    assert audio["input"]["turn_detection"]["threshold"] == 0.6
    assert audio["output"] == {"format": {"type": "audio/pcma"}, "voice": "jm_kumo", "speed": 1.2}
    assert core.config.instructions == "Speak like a pirate."


def test_a_session_sent_back_as_received_is_accepted_and_unknown_keys_are_named(vad: SileroVAD) -> None:
    core = make_core(vad)
    created = sent(core.start())[0]["session"]
    assert types(core.receive({"type": "session.update", "session": created})) == ["session.updated"]
    error = error_of(core.receive({"type": "session.update", "session": {"audio": {"input": {"vad": {}}}}}))
    assert (error["code"], error["param"]) == ("unknown_parameter", "session.audio.input.vad")


def test_a_stored_prompt_is_refused_not_ignored(vad: SileroVAD) -> None:
    core = make_core(vad)
    before = core.config
    error = error_of(core.receive({"type": "session.update", "session": {"prompt": {"id": "pmpt_123"}}}))
    assert (error["code"], error["param"]) == ("unsupported_parameter", "session.prompt")
    assert "send its text as instructions" in error["message"]
    assert core.config == before
    assert types(core.receive({"type": "session.update", "session": {"prompt": None}})) == ["session.updated"]


def test_a_voice_the_engine_cannot_speak_is_refused_where_it_is_chosen(vad: SileroVAD) -> None:
    notes = {"My clip": "the piper engine cannot clone a voice from a clip"}
    core = RealtimeCore(
        SessionConfig(model="test", instructions="Be brief.", voice="jf_alpha"),
        vad=vad.new_stream(),
        tts_sample_rate=TTS_RATE,
        voice_exists={"jf_alpha", "My clip"}.__contains__,
        voice_note=notes.get,
    )
    for event, param in (
        ({"type": "session.update", "session": {"audio": {"output": {"voice": "My clip"}}}}, "session"),
        ({"type": "response.create", "response": {"audio": {"output": {"voice": "My clip"}}}}, "response"),
    ):
        error = error_of(core.receive(event))
        assert (error["code"], error["param"]) == ("voice_not_usable", f"{param}.audio.output.voice")
        assert error["message"] == "voice 'My clip' cannot be spoken: the piper engine cannot clone a voice from a clip"
    assert core.config.voice == "jf_alpha"


def test_transcription_logprobs_are_refused_not_left_out(vad: SileroVAD) -> None:
    core = make_core(vad)
    include = {"include": ["item.input_audio_transcription.logprobs"]}
    error = error_of(core.receive({"type": "session.update", "session": include}))
    assert (error["code"], error["param"]) == ("unsupported_parameter", "session.include")
    assert "logprobs are not available" in error["message"]
    assert types(core.receive({"type": "session.update", "session": {"include": []}})) == ["session.updated"]


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"audio": {"output": {"voice": "nobody"}}}, "session.audio.output.voice"),
        ({"audio": {"input": {"format": {"type": "audio/flac"}}}}, "session.audio.input.format.type"),
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "session.audio.input.format.rate"),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}}, None),
        ({"audio": {"output": {"speed": 9}}}, "session.audio.output.speed"),
        ({"type": "translation"}, "session.type"),
        ({"instructions": 5}, "session.instructions"),
    ],
)
def test_session_update_rejects_bad_values_and_keeps_the_old_config(
    vad: SileroVAD, session: dict[str, Any], param: str | None
) -> None:
    core = make_core(vad)
    before = core.config
    error = error_of(core.receive({"type": "session.update", "event_id": "evt_1", "session": session}))
    assert error["code"] == "invalid_value"
    assert error["event_id"] == "evt_1"
    if param is not None:
        assert error["param"] == param
    assert core.config == before


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_event"),
        ('{"type": "no.such.event", "event_id": "e9"}', "invalid_event"),
        ('{"type": "input_audio_buffer.append", "audio": "@@@not base64@@@"}', "invalid_base64"),
        ('{"type": "input_audio_buffer.append", "audio": 42}', "invalid_value"),
        ('{"type": "input_audio_buffer.append", "audio": "AAEC"}', "invalid_audio"),  # 3 bytes: not 16-bit
        ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
        ('{"type": "response.cancel"}', "response_cancel_not_active"),
        ('{"type": "conversation.item.create", "item": {"type": "mcp_call"}}', "unsupported_item"),
        ('{"type": "conversation.item.create", "item": {"type": "function_call"}}', "invalid_value"),
        (
            '{"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 1}',
            "item_not_found",
        ),
        ('{"type": "response.create", "response": {"conversation": "conv_1"}}', "invalid_value"),
        ('{"type": "response.create", "response": {"prompt": {"id": "p"}}}', "unsupported_parameter"),
        ('{"type": ["session.update"]}', "invalid_event"),  # unhashable: once an unhandled exception
        ('{"type": {"a": 1}}', "invalid_event"),
        ('{"type": null}', "invalid_event"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),  # deeper than the parser's recursion limit
        ('{"type": "session.update", "session": {"voise": "x"}}', "unknown_parameter"),
        ('{"type": "session.update", "session": {"audio": {"output": {"volume": 2}}}}', "unknown_parameter"),
        ('{"type": "session.update", "session": {}, "voice": "joe"}', "unknown_parameter"),
        ('{"type": "input_audio_buffer.commit", "item_id": "item_1"}', "unknown_parameter"),
        (
            '{"type": "conversation.item.create", "previous_item_id": "item_gone", "item": {"type": "message",'
            ' "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}}',
            "item_not_found",
        ),
    ],
)
def test_bad_client_events_become_error_events(vad: SileroVAD, raw: str, code: str) -> None:
    core = make_core(vad)
    error = error_of(core.receive(raw))
    assert error["code"] == code
    assert error["message"]
    if '"event_id": "e9"' in raw:
        assert error["event_id"] == "e9"
    # ...and the session is still usable afterwards.
    assert types(core.receive({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]


def test_an_event_field_of_another_name_is_refused_not_ignored(vad: SileroVAD) -> None:
    # previous_item_id misspelt: ignored, the item would go to the end of the conversation.
    core = make_core(vad)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    error = error_of(core.receive({"type": "conversation.item.create", "previous_id": "root", "item": item}))
    assert (error["code"], error["param"], error["message"]) == (
        "unknown_parameter",
        "previous_id",
        "Unknown parameter: 'previous_id'.",
    )
    assert len(core.conversation) == 0
    added = core.receive({"type": "conversation.item.create", "event_id": "e1", "previous_item_id": None, "item": item})
    assert types(added) == ["conversation.item.added", "conversation.item.done"]


def test_oversized_events_and_audio_chunks_are_refused(vad: SileroVAD) -> None:
    core = make_core(vad, max_event_bytes=10_000, max_append_bytes=4_000)
    big_chunk = base64.b64encode(bytes(6_000)).decode()
    assert error_of(core.receive({"type": "input_audio_buffer.append", "audio": big_chunk}))["code"] == (
        "audio_chunk_too_large"
    )
    huge_event = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 20_000})
    assert error_of(core.receive(huge_event))["code"] == "event_too_large"


def test_manual_turn_commit_transcribe_and_respond(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    assert append(core, speech_24k()) == []  # no VAD events with turn detection off
    actions = core.receive({"type": "input_audio_buffer.commit"})
    assert types(actions) == ["input_audio_buffer.committed", "conversation.item.added"]
    job = only(actions, Transcribe)
    assert abs(job.audio.size / 16000 - 2.8) < 0.1  # the whole clip, at the ASR rate

    actions = core.transcription_done(job.job_id, "How do I get to Dublin?", 2.8)
    assert types(actions) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert sent(actions)[0]["delta"] == sent(actions)[1]["transcript"] == "How do I get to Dublin?"

    actions = core.receive({"type": "response.create"})
    start = only(actions, StartResponse)
    assert start.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How do I get to Dublin?"},
    ]
    assert types(actions) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    again = error_of(core.receive({"type": "response.create", "event_id": "e2"}))
    assert again["code"] == "conversation_already_has_active_response"
    assert again["event_id"] == "e2"

    core.response_audio(start.response_id, np.full(24000, 0.1, dtype=np.float32), "Take the train.")
    first = core.pop_audio(start.response_id)
    assert types(first) == ["response.output_audio_transcript.delta", "response.output_audio.delta"]
    assert len(base64.b64decode(sent(first)[1]["delta"])) == 4800  # 100 ms of 24 kHz pcm16
    while core.pending_audio_ms(start.response_id):
        core.pop_audio(start.response_id)
    done = core.response_finished(start.response_id, {"llm_first_token": 50.0})
    assert types(done) == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    final = sent(done)[-1]
    assert final["response"]["status"] == "completed"
    assert final["response"]["output"][0]["content"][0]["transcript"] == "Take the train."
    # The next turn's LLM context holds the whole exchange.
    core.receive({"type": "conversation.item.create", "item": _text_item("Thanks!")})
    next_start = only(core.receive({"type": "response.create"}), StartResponse)
    assert [m["content"] for m in next_start.messages[1:]] == ["How do I get to Dublin?", "Take the train.", "Thanks!"]


def test_a_user_audio_item_is_retrieved_with_its_audio_in_the_sessions_input_format(vad: SileroVAD) -> None:
    # OpenAI's conversation.item.retrieve: "to inspect user audio after noise cancellation and VAD".
    core = make_core(vad, turn_detection=None)
    speech = speech_24k()
    append(core, speech)
    job = only(core.receive({"type": "input_audio_buffer.commit"}), Transcribe)
    core.transcription_done(job.job_id, "How do I get to Dublin?", 2.8)
    (retrieved,) = sent(core.receive({"type": "conversation.item.retrieve", "item_id": job.item_id}))
    part = retrieved["item"]["content"][0]
    assert part["transcript"] == "How do I get to Dublin?"
    pcm = np.frombuffer(base64.b64decode(part["audio"]), dtype="<i2")  # 24 kHz PCM16, as it was sent
    assert abs(pcm.size - speech.size) <= 24 * 20  # all of it, within the resamplers' few ms
    heard, sent_audio = pcm.astype(np.float32) / 32768, speech[: pcm.size]
    assert np.corrcoef(heard[: sent_audio.size], sent_audio[: heard.size])[0, 1] > 0.9  # the same sound
    # In a G.711 session it comes back as G.711 at 8 kHz; only the newest 20 audio items keep theirs.
    core.receive({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}})
    ulaw = base64.b64encode(bytes([0xFF]) * 800).decode()  # 100 ms of silence
    for n in range(HEARD_ITEMS_KEPT):
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "audio": ulaw, "transcript": "."}],
        }
        core.receive({"type": "conversation.item.create", "item": {**item, "id": f"item_{n}"}})
    (newest,) = sent(core.receive({"type": "conversation.item.retrieve", "item_id": f"item_{HEARD_ITEMS_KEPT - 1}"}))
    assert len(base64.b64decode(newest["item"]["content"][0]["audio"])) == 800
    (oldest,) = sent(core.receive({"type": "conversation.item.retrieve", "item_id": job.item_id}))
    assert "audio" not in oldest["item"]["content"][0] and oldest["item"]["content"][0]["transcript"]


def test_with_transcription_off_the_turn_is_still_transcribed_for_the_llm_but_not_reported(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    core.receive({"type": "session.update", "session": {"audio": {"input": {"transcription": None}}}})
    append(core, speech_24k())
    job = only(core.receive({"type": "input_audio_buffer.commit"}), Transcribe)

    actions = core.transcription_done(job.job_id, "How do I get to Dublin?", 2.8)
    assert types(actions) == ["conversation.item.done"]  # no ...input_audio_transcription.completed
    start = only(core.receive({"type": "response.create"}), StartResponse)
    assert start.messages[-1] == {"role": "user", "content": "How do I get to Dublin?"}


@pytest.mark.parametrize(
    ("response", "code", "param"),
    [
        ({"modalities": ["text"]}, "unknown_parameter", "response.modalities"),  # the beta's name
        ({"audio": {"output": {"speed": 1.5}}}, "unknown_parameter", "response.audio.output.speed"),
        ({"audio": {"input": {}}}, "unknown_parameter", "response.audio.input"),
        ({"audio": "loud"}, "invalid_value", "response.audio"),
        ({"audio": {"output": []}}, "invalid_value", "response.audio.output"),
    ],
)
def test_response_create_names_a_field_it_does_not_know(
    vad: SileroVAD, response: dict[str, Any], code: str, param: str
) -> None:
    core = make_core(vad)
    actions = core.receive({"type": "response.create", "response": response})
    assert types(actions) == ["error"]
    assert (error_of(actions)["code"], error_of(actions)["param"]) == (code, param)
    if param == "response.modalities":
        assert error_of(actions)["message"].endswith("this server speaks the GA API: 'response.output_modalities'.")


def test_the_sdks_newer_fields_are_accepted(vad: SileroVAD) -> None:
    core = make_core(vad)
    newer = {"parallel_tool_calls": False, "reasoning": {"effort": "low"}}
    assert types(core.receive({"type": "session.update", "session": newer})) == ["session.updated"]
    response = {**newer, "audio": {"output": {"voice": "jf_alpha"}}, "output_modalities": ["text"]}
    assert "response.created" in types(core.receive({"type": "response.create", "response": response}))
    core.receive({"type": "response.cancel"})
    nulls = {"audio": None, "output_modalities": ["text"]}
    assert "response.created" in types(core.receive({"type": "response.create", "response": nulls}))


def test_response_create_waits_for_a_pending_transcript(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    append(core, speech_24k())
    job = only(core.receive({"type": "input_audio_buffer.commit"}), Transcribe)
    assert core.receive({"type": "response.create"}) == []  # held until the words are known
    actions = core.transcription_done(job.job_id, "Hello there.", 2.8)
    start = only(actions, StartResponse)
    assert start.messages[-1] == {"role": "user", "content": "Hello there."}


def test_server_vad_on_real_speech_speculates_then_commits_and_responds(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection(silence_duration_ms=500))
    silence = np.zeros(24000, dtype=np.float32)
    actions = append(core, np.concatenate([silence, speech_24k(), silence]))  # padded with digital silence
    names = [type(a).__name__ if not isinstance(a, Send) else a.event["type"] for a in actions]
    assert names[0] == "input_audio_buffer.speech_started"
    assert names[-3:] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    # ASR started during the silence wait (speculatively), before the turn was committed.
    assert names.index("Transcribe") < names.index("input_audio_buffer.speech_stopped")
    started = sent(actions)[0]
    assert 900 <= started["audio_start_ms"] <= 1300  # speech begins ~1 s in
    stopped = [e for e in sent(actions) if e["type"] == "input_audio_buffer.speech_stopped"][-1]
    assert 3600 <= stopped["audio_end_ms"] <= 3900  # where the speech ended (1 s + 2.8 s), not the silence wait
    committed = [e["item_id"] for e in sent(actions) if e["type"] == "input_audio_buffer.committed"]
    cancelled = {a.job_id for a in actions if isinstance(a, CancelTranscribe)}
    live = [a for a in actions if isinstance(a, Transcribe) and a.job_id not in cancelled]
    # The clip pauses after "and says,": each committed turn keeps exactly one transcription.
    assert [job.item_id for job in live] == committed
    assert committed[0] == started["item_id"]
    for job in live[:-1]:
        assert not [a for a in core.transcription_done(job.job_id, "And says.", 1.0) if isinstance(a, StartResponse)]
    result = core.transcription_done(live[-1].job_id, "How do I get to Dublin?", 1.8)
    assert "conversation.item.input_audio_transcription.completed" in types(result)
    start = only(result, StartResponse)  # create_response defaults to true
    assert start.messages[-1] == {"role": "user", "content": "How do I get to Dublin?"}


def test_server_vad_ignores_an_empty_transcript(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection())
    actions = append(core, np.concatenate([speech_24k(), np.zeros(24000, dtype=np.float32)]))
    job = [a for a in actions if isinstance(a, Transcribe)][-1]
    result = core.transcription_done(job.job_id, "", 0.3)
    assert not [a for a in result if isinstance(a, StartResponse)]


def test_barge_in_cancels_and_keeps_only_what_was_sent(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection())
    core.receive({"type": "conversation.item.create", "item": _text_item("Tell me a story.")})
    start = only(core.receive({"type": "response.create"}), StartResponse)
    one_second = np.full(24000, 0.1, dtype=np.float32)
    core.response_audio(start.response_id, one_second, "Once upon a time there lived a king.")
    core.response_audio(start.response_id, one_second, "He had three daughters.")
    for _ in range(5):  # half of the first clause reaches the client
        core.pop_audio(start.response_id)

    actions = append(core, speech_24k())
    assert types(actions)[0] == "input_audio_buffer.speech_started"
    cancel = only(actions, CancelResponse)
    assert cancel.response_id == start.response_id
    done = next(e for e in sent(actions) if e["type"] == "response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    transcript = done["response"]["output"][0]["content"][0]["transcript"]
    assert transcript == "Once upon a time"  # 4 of 8 words: the half that was sent
    # Late output of the cancelled response goes nowhere.
    core.response_audio(start.response_id, one_second, "And they lived happily.")
    assert core.pop_audio(start.response_id) == []
    assert core.response_finished(start.response_id) == []
    # The context the LLM sees next holds only the sent words.
    assistant = [item for item in core.conversation if item.role == "assistant"]
    assert [item.visible_text() for item in assistant] == ["Once upon a time"]


def test_client_truncate_and_cancel(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    core.receive({"type": "conversation.item.create", "item": _text_item("Hi")})
    start = only(core.receive({"type": "response.create"}), StartResponse)
    core.response_audio(start.response_id, np.full(48000, 0.1, dtype=np.float32), "one two three four")
    while core.pending_audio_ms(start.response_id):
        core.pop_audio(start.response_id)
    done = sent(core.response_finished(start.response_id))[-1]
    item_id = done["response"]["output"][0]["id"]

    too_far = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 9000}
    assert error_of(core.receive(too_far))["param"] == "audio_end_ms"
    actions = core.receive({**too_far, "audio_end_ms": 1000})  # the client played the first second
    assert types(actions) == ["conversation.item.truncated"]
    assert core.conversation.get(item_id).visible_text() == "one two"  # type: ignore[union-attr]

    start = only(core.receive({"type": "response.create"}), StartResponse)
    actions = core.receive({"type": "response.cancel"})
    assert only(actions, CancelResponse).response_id == start.response_id
    assert sent(actions)[-1]["response"]["status_details"]["reason"] == "client_cancelled"


def test_the_llm_is_shown_its_own_text_of_a_reply_until_the_reply_is_truncated(vad: SileroVAD) -> None:
    """A reply spoken to its end goes back to the LLM as the LLM wrote it (its server's cached
    prefix); the client sees the words as spoken; a truncate that cuts words shows the LLM those."""
    core = make_core(vad, turn_detection=None)
    start = _a_reply_all_sent(core, "How do I get there?", ("Two ways: 1. Take the bus.", 1.0), ("2. Walk.", 1.0))
    written = "Two ways:\n1. Take the **bus**.\n2. Walk."
    done = sent(core.response_finished(start.response_id, None, None, written))[-1]
    assert done["response"]["output"][0]["content"][0]["transcript"] == "Two ways: 1. Take the bus. 2. Walk."
    item_id = done["response"]["output"][0]["id"]

    def llm_sees() -> object:
        start = only(core.receive({"type": "response.create"}), StartResponse)
        core.receive({"type": "response.cancel"})
        return start.messages[-1]["content"]

    assert llm_sees() == written
    truncate = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 2000}
    assert types(core.receive(truncate)) == ["conversation.item.truncated"]  # all of it heard: nothing cut
    assert llm_sees() == written
    core.receive({**truncate, "audio_end_ms": 1000})
    assert llm_sees() == "Two ways: 1. Take the bus."


def test_a_reply_the_llm_stopped_at_its_token_cap_ends_incomplete_with_all_it_said(vad: SileroVAD) -> None:
    """As OpenAI's: ``incomplete``, reason ``max_output_tokens``; nothing is cut from what was
    sent (unlike a cancel), the audio plays out, and the LLM sees its words next turn."""
    core = make_core(vad, turn_detection=None)
    start = _a_reply_all_sent(core, "How do I get there?", ("First take the bus.", 1.0), ("Then walk", 0.5))
    actions = core.response_finished(
        start.response_id, None, None, "First take the bus. Then walk", "max_output_tokens"
    )
    assert any(isinstance(a, FinishAudio) for a in actions) and not any(isinstance(a, ClearAudio) for a in actions)
    assert "response.output_audio.done" in types(actions)
    response = sent(actions)[-1]["response"]
    assert (response["status"], response["status_details"]) == (
        "incomplete",
        {"type": "incomplete", "reason": "max_output_tokens"},
    )
    (item,) = response["output"]
    assert (item["status"], item["content"][0]["transcript"]) == ("incomplete", "First take the bus. Then walk")
    core.receive({"type": "conversation.item.create", "item": _text_item("And then?")})
    start = only(core.receive({"type": "response.create"}), StartResponse)
    assert [m["content"] for m in start.messages[-2:]] == ["First take the bus. Then walk", "And then?"]


def test_a_truncate_that_cancels_the_reply_is_checked_against_the_audio_sent(vad: SileroVAD) -> None:
    """A phone bridge truncates the reply at the audio that left (SIP: 1200 ms) while the reply is
    still running. The cancel keeps only whole words, so the second clause, 200 ms in and no word
    of it heard, is dropped; the truncate is still within what was sent and must not be refused."""
    core = make_core(vad, turn_detection=None)
    core.receive({"type": "conversation.item.create", "item": _text_item("Tell me a story.")})
    start = only(core.receive({"type": "response.create"}), StartResponse)
    one_second = np.full(24000, 0.1, dtype=np.float32)
    core.response_audio(start.response_id, one_second, "Once upon a time there lived a king.")
    core.response_audio(start.response_id, one_second, "He had three daughters.")
    for _ in range(12):  # 1.2 s sent: the first clause and a fifth of the second
        core.pop_audio(start.response_id)
    item_id = [item for item in core.conversation if item.role == "assistant"][-1].id

    truncate = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1200}
    actions = core.receive(truncate)
    assert "error" not in types(actions)
    assert only(actions, CancelResponse).response_id == start.response_id
    assert types(actions)[-1] == "conversation.item.truncated"
    assert core.conversation.get(item_id).visible_text() == "Once upon a time there lived a king."  # type: ignore[union-attr]
    beyond = {**truncate, "audio_end_ms": 1400}  # more than was ever sent: still refused
    assert error_of(core.receive(beyond))["param"] == "audio_end_ms"


@pytest.mark.parametrize(("fmt", "encode"), [("audio/pcmu", ulaw_encode), ("audio/pcma", alaw_encode)])
def test_g711_formats_in_and_out(vad: SileroVAD, fmt: str, encode: Any) -> None:
    core = make_core(vad, turn_detection=None)
    core.receive(
        {
            "type": "session.update",
            "session": {"audio": {"input": {"format": {"type": fmt}}, "output": {"format": {"type": fmt}}}},
        }
    )
    speech_8k = (read_clip("en_dublin_q.wav", 8000) * 32767).astype(np.int16)
    chunk = base64.b64encode(encode(speech_8k)).decode()
    assert core.receive({"type": "input_audio_buffer.append", "audio": chunk}) == []
    job = only(core.receive({"type": "input_audio_buffer.commit"}), Transcribe)
    assert abs(job.audio.size / 16000 - speech_8k.size / 8000) < 0.05  # decoded and resampled to 16 kHz
    assert np.abs(job.audio).max() > 0.1  # real signal, not silence

    core.transcription_done(job.job_id, "hello", 1.0)
    start = only(core.receive({"type": "response.create"}), StartResponse)
    core.response_audio(start.response_id, np.full(24000, 0.1, dtype=np.float32), "Hi.")
    delta = next(e for e in sent(core.pop_audio(start.response_id)) if e["type"] == "response.output_audio.delta")
    assert len(base64.b64decode(delta["delta"])) == 800  # 100 ms at 8 kHz, one byte a sample


def test_close_cancels_running_work(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    append(core, speech_24k())
    job = only(core.receive({"type": "input_audio_buffer.commit"}), Transcribe)
    core.receive({"type": "conversation.item.create", "item": _text_item("Hi")})
    core.transcription_done(job.job_id, "", 1.0)
    start = only(core.receive({"type": "response.create"}), StartResponse)
    append(core, speech_24k())
    second = only(core.receive({"type": "input_audio_buffer.commit"}), Transcribe)
    actions = core.close()
    assert set(actions) == {CancelTranscribe(second.job_id), CancelResponse(start.response_id)}
    assert not [a for a in actions if isinstance(a, Send)]  # nobody is listening any more


def _text_item(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _a_reply_all_sent(core: RealtimeCore, question: str, *clauses: tuple[str, float]) -> StartResponse:
    """``question`` asked, and its reply's ``clauses`` (text, seconds of audio) synthesized and sent."""
    core.receive({"type": "conversation.item.create", "item": _text_item(question)})
    start: StartResponse = only(core.receive({"type": "response.create"}), StartResponse)
    for text, seconds in clauses:
        core.response_audio(start.response_id, np.full(round(24000 * seconds), 0.1, dtype=np.float32), text)
    while core.pending_audio_ms(start.response_id):
        core.pop_audio(start.response_id)
    return start


def test_a_speech_fragment_starts_a_turn_but_does_not_interrupt(vad: SileroVAD) -> None:
    """The last 130 ms of the Dublin clip is the start of a word cut by the clip's edge:
    real speech, too short to cut the agent off (padded with digital silence)."""
    core = make_core(vad, turn_detection=TurnDetection())
    core.receive({"type": "conversation.item.create", "item": _text_item("Tell me a story.")})
    start = only(core.receive({"type": "response.create"}), StartResponse)
    fragment = speech_24k()[int(2.62 * 24000) :]
    silence = np.zeros(24000, dtype=np.float32)
    actions = append(core, np.concatenate([silence, fragment, silence[:2400]]))
    assert "input_audio_buffer.speech_started" in types(actions)
    assert core.audio_on_hold()  # the agent pauses while it can't tell a cough from a word
    actions += append(core, silence)
    assert "input_audio_buffer.speech_stopped" in types(actions)
    assert not [a for a in actions if isinstance(a, CancelResponse)]
    assert not core.audio_on_hold()
    core.response_audio(start.response_id, np.full(2400, 0.1, dtype=np.float32), "Once.")
    assert "response.output_audio.delta" in types(core.pop_audio(start.response_id))  # still talking


def test_an_empty_last_transcript_does_not_drop_the_reply_to_earlier_words(vad: SileroVAD) -> None:
    """Two committed turns (the Dublin clip pauses after "and says,"); the second comes back
    empty (a fragment): the reply to the first one's words must still start."""
    core = make_core(vad, turn_detection=TurnDetection())
    silence = np.zeros(24000, dtype=np.float32)
    actions = append(core, np.concatenate([speech_24k(), silence]))
    cancelled = {a.job_id for a in actions if isinstance(a, CancelTranscribe)}
    first, second = [a for a in actions if isinstance(a, Transcribe) and a.job_id not in cancelled]
    assert not core.transcription_done(first.job_id, "And says, how do I get to Dublin?", 2.0)[3:]
    start = only(core.transcription_done(second.job_id, "", 0.2), StartResponse)
    assert start.messages[-1] == {"role": "user", "content": "And says, how do I get to Dublin?"}  # empty one skipped


def test_the_context_window_moves_in_jumps_so_the_llm_can_reuse_its_prefix() -> None:
    from cosyagent.agent.conversation import Conversation, ConversationItem

    conversation = Conversation()
    firsts = []
    for turn in range(40):
        conversation.add(ConversationItem(id=f"u{turn}", role="user", content_type="input_text", text=f"q{turn}"))
        messages = conversation.chat_messages("sys", max_items=20)
        assert messages[0] == {"role": "system", "content": "sys"}
        assert 10 < len(messages) - 1 <= 20 or turn < 20
        assert messages[-1]["content"] == f"q{turn}"
        firsts.append(messages[1]["content"])
    # The first message after the instructions changes once every 10 turns, not every turn.
    assert firsts == ["q0"] * 20 + ["q10"] * 10 + ["q20"] * 10


# --- semantic_vad: Smart Turn ends a finished turn at the pause ------------------------------------


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    engine = SmartTurn()
    engine.load()
    return engine


def silence_before_stop(core: RealtimeCore, audio_24k: np.ndarray, model: SmartTurn | None) -> int | None:
    """Feed ``audio_24k`` in 20 ms chunks, answering each PredictTurnEnd at once with the real
    model's verdict (as if it ran in no time); returns the milliseconds of silence fed after the
    speech before speech_stopped (None if the turn never ended)."""
    data = pcm16(audio_24k)
    step = 24 * 2 * 20
    for offset in range(0, len(data), step):
        chunk = base64.b64encode(data[offset : offset + step]).decode()
        actions = core.receive({"type": "input_audio_buffer.append", "audio": chunk})
        for predict in (a for a in actions if isinstance(a, PredictTurnEnd)):
            assert model is not None, "server_vad must not ask the end-of-turn model"
            actions += core.turn_end_predicted(predict.job_id, model.predict(predict.audio))
        stopped = [e for e in sent(actions) if e["type"] == "input_audio_buffer.speech_stopped"]
        if stopped:
            return (offset + step) // 48 - stopped[0]["audio_end_ms"]
    return None


def test_semantic_vad_ends_a_finished_question_sooner_than_the_silence_wait(
    vad: SileroVAD, smart_turn: SmartTurn
) -> None:
    question = read_clip("en_dublin_q.wav", 24000)[: int(2.6 * 24000)]  # "...how do I get to Dublin?"
    audio = np.concatenate([question, np.zeros(24000, dtype=np.float32)])  # then digital silence
    server_vad = silence_before_stop(make_core(vad, turn_detection=TurnDetection()), audio, None)
    semantic = silence_before_stop(make_core(vad, turn_detection=TurnDetection(type="semantic_vad")), audio, smart_turn)
    assert server_vad is not None and server_vad >= 480
    assert semantic is not None and semantic <= 300  # the pause (~160 ms), not the 500 ms wait


def test_semantic_vad_waits_out_the_silence_when_the_sentence_is_unfinished(
    vad: SileroVAD, smart_turn: SmartTurn
) -> None:
    # A lecturer's "And the answer that comes back is..." then silence: Smart Turn says
    # unfinished, so the turn ends only after the full silence wait, as with server_vad.
    fragment = read_clip("en_lecture_60s.wav", 24000)[int(2.5 * 24000) : int(4.9 * 24000)]
    audio = np.concatenate([fragment, np.zeros(24000, dtype=np.float32)])
    core = make_core(vad, turn_detection=TurnDetection(type="semantic_vad"))
    waited = silence_before_stop(core, audio, smart_turn)
    assert waited is not None and waited >= 480


def test_a_verdict_that_arrives_after_the_speaker_resumed_is_ignored(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection(type="semantic_vad"))
    lecture = read_clip("en_lecture_60s.wav", 24000)
    speech = lecture[int(2.5 * 24000) : int(4.5 * 24000)]  # speech until 4.44 s
    pause = np.zeros(int(0.25 * 24000), dtype=np.float32)  # a pause, shorter than the silence wait
    actions = append(core, np.concatenate([speech, pause]))
    predict = only(actions, PredictTurnEnd)
    actions = append(core, lecture[int(5.0 * 24000) : int(6.0 * 24000)])  # they go on before the verdict
    assert predict.job_id in {a.job_id for a in actions if isinstance(a, CancelTranscribe)}
    assert core.turn_end_predicted(predict.job_id, 0.99) == []


def test_the_speculative_transcript_takes_the_lane_before_the_turn_model(vad: SileroVAD) -> None:
    """The session starts its engine jobs in the order of the actions, and the first takes the
    free CPU lane. The reply needs the transcript however the turn ends, so it goes first, due
    now; Smart Turn's verdict only helps until the silence wait would end the turn: due then."""
    core = make_core(vad, turn_detection=TurnDetection(type="semantic_vad", eagerness="low"))
    lecture = read_clip("en_lecture_60s.wav", 24000)
    actions = append(core, np.concatenate([lecture[int(2.5 * 24000) : int(4.5 * 24000)], np.zeros(6000, np.float32)]))
    jobs = [a for a in actions if isinstance(a, (PredictTurnEnd, Transcribe))]
    assert [type(job) for job in jobs] == [Transcribe, PredictTurnEnd]
    transcribe, predict = jobs
    assert transcribe.job_id == predict.job_id and transcribe.due_in_ms == 0
    assert predict.due_in_ms == 500 - SPECULATE_AFTER_MS
    # The silence wait ends the turn before a verdict: the verdict is cancelled, the transcript kept.
    actions = append(core, np.zeros(12000, np.float32))
    assert any(e["type"] == "input_audio_buffer.speech_stopped" for e in sent(actions))
    assert [a.job_id for a in actions if isinstance(a, CancelTurnEnd)] == [predict.job_id]
    assert not [a for a in actions if isinstance(a, CancelTranscribe | Transcribe)]


def test_session_update_switches_to_semantic_vad(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=TurnDetection())
    detection = {"type": "semantic_vad", "eagerness": "high"}
    (event,) = sent(
        core.receive({"type": "session.update", "session": {"audio": {"input": {"turn_detection": detection}}}})
    )
    shown = event["session"]["audio"]["input"]["turn_detection"]
    assert shown == {"type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}
    bad = {"type": "semantic_vad", "eagerness": "eager"}
    error = error_of(core.receive({"type": "session.update", "session": {"audio": {"input": {"turn_detection": bad}}}}))
    assert error["param"] == "session.audio.input.turn_detection.eagerness"


def test_input_audio_faster_than_its_budget_is_refused_then_accepted_again(vad: SileroVAD) -> None:
    now = [100.0]
    config = SessionConfig(model="test", instructions="Be brief.", voice="jf_alpha", turn_detection=None)
    limits = CoreLimits(max_input_audio_speed=1.5, input_audio_burst_seconds=2.0)
    core = RealtimeCore(
        config, vad=vad.new_stream(), tts_sample_rate=TTS_RATE, voice_exists=VOICES.__contains__,
        limits=limits, clock=lambda: now[0],
    )  # fmt: skip
    second = np.zeros(16_000, dtype=np.float32)
    assert core.append_samples(second) == [] and core.append_samples(second) == []  # the 2 s burst
    error = error_of(core.append_samples(second))
    assert error["code"] == "input_audio_rate_exceeded" and "1.5x real time" in error["message"]
    now[0] += 1.0  # 1.5 s of audio earned back
    assert core.append_samples(second) == []
    assert error_of(core.append_samples(second))["code"] == "input_audio_rate_exceeded"


def test_manual_commits_wait_for_their_transcripts_past_the_backlog_limit(vad: SileroVAD) -> None:
    core = make_core(vad, max_pending_transcripts=2)
    speech = pcm16(speech_24k()[:24_000])
    commit = {"type": "input_audio_buffer.commit"}
    for _ in range(2):
        core.receive({"type": "input_audio_buffer.append", "audio": base64.b64encode(speech).decode()})
        assert any(isinstance(a, Transcribe) for a in core.receive(commit))
    core.receive({"type": "input_audio_buffer.append", "audio": base64.b64encode(speech).decode()})
    assert error_of(core.receive(commit))["code"] == "transcription_backlog"


def test_an_item_may_not_take_an_id_already_in_the_conversation(vad: SileroVAD) -> None:
    core = make_core(vad, turn_detection=None)
    create = {"type": "conversation.item.create", "item": {**_text_item("Hi."), "id": "item_mine"}}
    assert types(core.receive(create))[0] == "conversation.item.added"
    error = error_of(core.receive(create))
    assert (error["code"], error["param"]) == ("invalid_value", "item.id")
    assert [item.id for item in core.conversation] == ["item_mine"]
    core.receive({"type": "conversation.item.delete", "item_id": "item_mine"})
    assert types(core.receive(create))[0] == "conversation.item.added"  # the id is free once deleted


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({**_text_item("Hi."), "bogus": 1}, "item.bogus"),
        ({"type": "function_call", "name": "f", "arguments": "{}", "output": "x"}, "item.output"),
        ({"type": "function_call_output", "call_id": "call_1", "output": "x", "name": "f"}, "item.name"),
    ],
)
def test_an_item_field_its_type_does_not_have_is_named(vad: SileroVAD, item: dict[str, Any], param: str) -> None:
    core = make_core(vad, turn_detection=None)
    error = error_of(core.receive({"type": "conversation.item.create", "item": item}))
    assert (error["code"], error["param"]) == ("unknown_parameter", param)
    assert len(core.conversation) == 0
    echoed = {**_text_item("Hi."), "object": "realtime.item", "status": "completed"}  # sent back as received
    assert types(core.receive({"type": "conversation.item.create", "item": echoed}))[0] == "conversation.item.added"


def test_a_reply_before_anyone_spoke_hears_the_caller_pick_up(vad: SileroVAD) -> None:
    """Asked to speak first with nothing said and no instructions of its own, the LLM is shown an
    opening line (not an item: nobody said it); a reply with its own instructions is not, nor one
    after anything was said (next test), nor an out-of-band input (tests/unit/test_out_of_band_core.py)."""
    core = make_core(vad, turn_detection=None)
    start = only(core.receive({"type": "response.create"}), StartResponse)
    assert start.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello."}]
    assert [item.role for item in core.conversation] == ["assistant"]  # the reply's own item only
    core.response_finished(start.response_id, {})

    directed = {"type": "response.create", "response": {"instructions": "Say goodbye."}}
    start = only(core.receive(directed), StartResponse)
    assert [m["role"] for m in start.messages] == ["system"]
    assert start.messages[0]["content"] == "Say goodbye."


def _greeted(core: RealtimeCore) -> RealtimeCore:
    """``core`` after the agent spoke first: "Hi! How can I help?", all of it played."""
    start = only(core.receive({"type": "response.create"}), StartResponse)
    core.response_audio(start.response_id, np.full(2400, 0.1, dtype=np.float32), "Hi! How can I help?")
    while core.pending_audio_ms(start.response_id):
        core.pop_audio(start.response_id)
    core.response_finished(start.response_id, {})
    return core


def test_after_the_greeting_the_llm_sees_what_was_said_not_the_opening_line(vad: SileroVAD) -> None:
    core = _greeted(make_core(vad, turn_detection=None))
    core.receive({"type": "conversation.item.create", "item": _text_item("What time is it?")})
    messages = only(core.receive({"type": "response.create"}), StartResponse).messages
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("assistant", "Hi! How can I help?"),
        ("user", "What time is it?"),
    ]


def test_a_reply_told_what_to_say_after_the_agent_spoke_last_answers_its_instructions(vad: SileroVAD) -> None:
    """The reply's instructions come last, as the line to answer, after the session's; when the
    user spoke last they replace the session's instructions, as OpenAI's do."""
    core = _greeted(make_core(vad, turn_detection=None))
    told = {"type": "response.create", "response": {"instructions": "Ask whether the caller is still there."}}
    messages = only(core.receive(told), StartResponse).messages
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", "Be brief."),
        ("assistant", "Hi! How can I help?"),
        ("user", "Ask whether the caller is still there."),
    ]
    assert [item.role for item in core.conversation] == ["assistant", "assistant"]  # not an item
    core.receive({"type": "response.cancel"})

    core.receive({"type": "conversation.item.create", "item": _text_item("What time is it?")})
    messages = only(
        core.receive({"type": "response.create", "response": {"instructions": "Say noon."}}), StartResponse
    ).messages
    assert messages[0] == {"role": "system", "content": "Say noon."} and messages[-1]["role"] == "user"
    assert messages[-1]["content"] == "What time is it?"
