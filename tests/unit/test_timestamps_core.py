"""Word and viseme timestamps in the sans-I/O Realtime core, from real Piper synthesis.

The audio and its timings come from the real Piper engine (``synthesize_timed``), as the
session would hand them over; the core is driven with plain dicts.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cosyagent.agent.events import CancelResponse, PlayAudio, Send, StartResponse
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_config import SessionConfig, TurnDetection
from cosyagent.audio.pcm import leading_silence, pcm16_to_float
from cosyagent.engines.piper_tts import PiperTTS
from cosyagent.engines.timings import TimedAudio, WordTiming
from cosyagent.engines.vad import SileroVAD
from cosyagent.engines.visemes import VISEME_NAMES, VisemeTiming
from cosyagent.pipeline.speak import speak
from cosyagent.pipeline.timestamps import SpeechTimings
from tests.unit.test_realtime_core import append, only, speech_24k

VOICE = "joe"
CLAUSES = ("The quick brown fox jumps over the lazy dog.", "Then it runs away into the forest.")
TIMESTAMPS = "response.output_audio_timestamps.delta"


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperTTS]:
    engine = PiperTTS()
    engine.load()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
async def spoken(piper: PiperTTS) -> list[TimedAudio]:
    return [chunk for clause in CLAUSES async for chunk in piper.synthesize_timed(clause, voice=VOICE)]


def make_core(vad: SileroVAD, piper: PiperTTS, *, media: bool = False, times_words: bool = True) -> RealtimeCore:
    config = SessionConfig(model="test", instructions="Be brief.", voice=VOICE, turn_detection=TurnDetection())
    return RealtimeCore(
        config,
        vad=vad.new_stream(),
        tts_sample_rate=piper.sample_rate,
        voice_exists={VOICE}.__contains__,
        audio_on_media_tracks=media,
        times_words=times_words,
    )


def opt_in(core: RealtimeCore, kinds: Any) -> list[dict[str, Any]]:
    update = {"type": "session.update", "session": {"audio": {"output": {"timestamps": kinds}}}}
    return [a.event for a in core.receive(update) if isinstance(a, Send)]


def start(core: RealtimeCore) -> StartResponse:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me about a fox."}]}
    core.receive({"type": "conversation.item.create", "item": item})
    return only(core.receive({"type": "response.create"}), StartResponse)  # type: ignore[no-any-return]


def feed(core: RealtimeCore, response_id: str, spoken: list[TimedAudio]) -> None:
    for clause, chunk in zip(CLAUSES, spoken, strict=True):
        core.response_audio(response_id, chunk.audio, clause, SpeechTimings.of(chunk))


def drain(core: RealtimeCore, response_id: str) -> list[Any]:
    out: list[Any] = []
    while actions := core.pop_audio(response_id):
        out += actions
    return out


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    engine = SileroVAD()
    engine.load()
    return engine


def test_unknown_kind_is_refused_with_its_param(vad: SileroVAD, piper: PiperTTS) -> None:
    core = make_core(vad, piper)
    (error,) = opt_in(core, ["word", "phoneme"])
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["param"] == "session.audio.output.timestamps[1]"
    assert "phoneme" in error["error"]["message"]
    (error,) = opt_in(core, "word")
    assert error["error"]["param"] == "session.audio.output.timestamps"
    assert core.config.timestamps == ()


def test_without_opt_in_nothing_changes(vad: SileroVAD, piper: PiperTTS, spoken: list[TimedAudio]) -> None:
    core = make_core(vad, piper)
    created = next(a.event for a in core.start() if isinstance(a, Send))
    assert "timestamps" not in created["session"]["audio"]["output"]
    begun = start(core)
    assert not begun.timestamps
    feed(core, begun.response_id, spoken)
    core.flush_audio(begun.response_id)
    events = [a.event for a in drain(core, begun.response_id) if isinstance(a, Send)]
    events += [a.event for a in core.response_finished(begun.response_id) if isinstance(a, Send)]
    assert TIMESTAMPS not in {e["type"] for e in events}


def test_timestamps_go_just_before_the_audio_they_describe(
    vad: SileroVAD, piper: PiperTTS, spoken: list[TimedAudio]
) -> None:
    core = make_core(vad, piper)
    (updated,) = opt_in(core, ["viseme", "word"])
    assert updated["session"]["audio"]["output"]["timestamps"] == ["word", "viseme"]
    begun = start(core)
    assert begun.timestamps
    feed(core, begun.response_id, spoken)
    core.flush_audio(begun.response_id)
    events = [a.event for a in drain(core, begun.response_id) if isinstance(a, Send)]
    events += [a.event for a in core.response_finished(begun.response_id) if isinstance(a, Send)]

    words: list[dict[str, Any]] = []
    visemes: list[dict[str, Any]] = []
    audio_ms = 0.0  # the item's audio sent before the event
    for index, event in enumerate(events):
        if event["type"] == "response.output_audio.delta":
            audio_ms += pcm16_to_float(base64.b64decode(event["delta"])).size / 24.0
        if event["type"] != TIMESTAMPS:
            continue
        assert event["response_id"] == begun.response_id and event["content_index"] == 0
        assert abs(event["audio_start_ms"] - audio_ms) <= 1  # where the audio after it starts
        following = next((e for e in events[index + 1 :] if e["type"] == "response.output_audio.delta"), None)
        piece_ms = pcm16_to_float(base64.b64decode(following["delta"])).size / 24.0 if following else 0.0
        for mark in event["words"] + event["visemes"]:
            # Never later than its audio: it starts before the end of the next piece, and it is not stale.
            assert mark["start_ms"] <= audio_ms + piece_ms + 1, (mark, audio_ms, piece_ms)
            assert mark["start_ms"] >= audio_ms - 2, (mark, audio_ms)
        words += event["words"]
        visemes += event["visemes"]

    expected = [w.text for chunk in spoken for w in chunk.words]
    assert [w["text"] for w in words] == expected
    assert "fox" in expected and "forest" in expected
    starts = [w["start_ms"] for w in words]
    assert starts == sorted(starts) and all(w["end_ms"] >= w["start_ms"] for w in words)
    # The second clause's words are on the item's clock: after the first clause's audio.
    first_ms = 1000 * spoken[0].audio.size / piper.sample_rate
    second = next(w for w in words if w["text"] == "Then")
    assert abs(second["start_ms"] - (first_ms + spoken[1].words[0].start_ms)) <= 2
    assert {v["viseme"] for v in visemes} <= set(VISEME_NAMES)
    assert len({v["viseme"] for v in visemes}) >= 8
    assert visemes[-1]["viseme"] == "sil"
    assert audio_ms - 300 <= visemes[-1]["start_ms"] <= audio_ms  # the mouth closes as the speech ends


def test_barge_in_drops_the_timestamps_of_unsent_audio(
    vad: SileroVAD, piper: PiperTTS, spoken: list[TimedAudio]
) -> None:
    core = make_core(vad, piper)
    opt_in(core, ["word"])
    begun = start(core)
    feed(core, begun.response_id, spoken)
    popped = [core.pop_audio(begun.response_id) for _ in range(6)]
    sent_events = [a.event for actions in popped for a in actions if isinstance(a, Send)]
    sent_ms = 600.0  # six pieces of 100 ms
    actions = append(core, speech_24k())  # the user talks over the reply
    only(actions, CancelResponse)
    after = [a.event for a in actions if isinstance(a, Send)]
    assert TIMESTAMPS not in {e["type"] for e in after}
    words = [w for e in sent_events if e["type"] == TIMESTAMPS for w in e["words"]]
    assert words and all(w["start_ms"] < sent_ms for w in words)
    assert len(words) < len([w for chunk in spoken for w in chunk.words])
    assert core.pop_audio(begun.response_id) == []


def test_media_track_timestamps_go_before_the_samples(
    vad: SileroVAD, piper: PiperTTS, spoken: list[TimedAudio]
) -> None:
    core = make_core(vad, piper, media=True)
    opt_in(core, ["viseme"])
    begun = start(core)
    feed(core, begun.response_id, spoken)
    actions = drain(core, begun.response_id)
    played_ms = 0.0
    for index, action in enumerate(actions):
        if isinstance(action, PlayAudio):
            played_ms += 1000 * action.samples.size / action.sample_rate
        elif isinstance(action, Send) and action.event["type"] == TIMESTAMPS:
            assert action.event["words"] == []
            assert abs(action.event["audio_start_ms"] - played_ms) <= 1
            nxt = next(a for a in actions[index:] if isinstance(a, PlayAudio))
            end_ms = played_ms + 1000 * nxt.samples.size / nxt.sample_rate
            assert all(played_ms - 2 <= v["start_ms"] <= end_ms + 1 for v in action.event["visemes"])
    assert played_ms > 2000


def test_an_engine_that_cannot_time_words_says_so_once(vad: SileroVAD, piper: PiperTTS) -> None:
    core = make_core(vad, piper, times_words=False)
    core.start()
    first = opt_in(core, ["word", "viseme"])
    assert [e["type"] for e in first] == ["session.updated", "error"]
    assert first[1]["error"]["code"] == "timestamps_unavailable"
    assert first[1]["error"]["param"] == "session.audio.output.timestamps"
    assert [e["type"] for e in opt_in(core, ["word"])] == ["session.updated"]  # once a session
    begun = start(core)
    assert not begun.timestamps  # the audio still plays, untimed
    core.response_audio(begun.response_id, np.full(22050, 0.1, dtype=np.float32), "Hi.")
    assert "response.output_audio.delta" in [a.event["type"] for a in drain(core, begun.response_id)]


def test_a_session_configured_before_it_starts_is_told_after_session_created(vad: SileroVAD, piper: PiperTTS) -> None:
    """As a WebRTC call's session (POST /v1/realtime/calls) is: the notice is not a refusal of it."""
    core = make_core(vad, piper, times_words=False)
    assert [e["type"] for e in opt_in(core, ["viseme"])] == ["session.updated"]
    started = [a.event for a in core.start() if isinstance(a, Send)]
    assert [e["type"] for e in started] == ["session.created", "error"]
    assert started[1]["error"]["code"] == "timestamps_unavailable"
    assert [e["type"] for e in opt_in(core, ["viseme"])] == ["session.updated"]


async def test_speak_times_each_clause_only_when_asked(piper: PiperTTS) -> None:
    text = " ".join(CLAUSES)
    timed = [chunk async for chunk in speak(piper, text, voice=VOICE, timed=True)]
    plain = [chunk async for chunk in speak(piper, text, voice=VOICE)]
    assert [c.text for c in timed] == [c.text for c in plain] == list(CLAUSES)
    assert all(c.timings is None for c in plain)
    for chunk, untimed in zip(timed, plain, strict=True):
        assert chunk.timings is not None
        assert abs(chunk.samples.size - untimed.samples.size) < 0.1 * untimed.samples.size  # (Piper samples noise)
        assert chunk.timings.words[-1].end_ms <= 1000 * chunk.samples.size / piper.sample_rate
    first = timed[0].timings
    assert first is not None and [w.text for w in first.words] == CLAUSES[0].rstrip(".").split()


async def test_a_piper_reply_starts_at_its_voice_and_its_first_word_there(piper: PiperTTS) -> None:
    """Piper starts a clause with tens of ms of silence (its timings say 35-58 ms before the first
    word); the first audio keeps 10 ms of it, and the timings move with the cut."""
    [raw] = [chunk async for chunk in piper.synthesize_timed(CLAUSES[0], voice=VOICE)]
    first_raw = raw.words[0].start_ms
    [first, *_] = [chunk async for chunk in speak(piper, " ".join(CLAUSES), voice=VOICE, timed=True)]
    rate = piper.sample_rate
    assert leading_silence(first.samples, rate) <= rate * 15 // 1000  # 10 ms kept, a 5 ms frame's rounding
    assert leading_silence(raw.audio, rate) > leading_silence(first.samples, rate)
    assert first.timings is not None
    # The cut moved the first word sooner by about the silence it removed (Piper samples noise:
    # the two syntheses differ a little).
    assert 0 <= first.timings.words[0].start_ms < first_raw
    assert first.timings.words[-1].end_ms <= 1000 * first.samples.size / rate


def test_timings_of_speech_cut_at_its_start_come_sooner_and_none_before_zero() -> None:
    timings = SpeechTimings(
        (WordTiming("Hello", 60.0, 300.0), WordTiming("there", 320.0, 600.0)),
        (VisemeTiming("sil", 0.0), VisemeTiming("E", 60.0), VisemeTiming("nn", 320.0)),
    )
    sooner = timings.sooner(50.0)
    assert [(w.text, w.start_ms, w.end_ms) for w in sooner.words] == [("Hello", 10.0, 250.0), ("there", 270.0, 550.0)]
    assert [(v.viseme, v.start_ms) for v in sooner.visemes] == [("sil", 0.0), ("E", 10.0), ("nn", 270.0)]
    cut_into = timings.sooner(100.0).words[0]
    assert (cut_into.start_ms, cut_into.end_ms) == (0.0, 200.0)
