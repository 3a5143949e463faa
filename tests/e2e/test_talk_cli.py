"""`cosyagent talk` end to end: the real command against a real `cosyagent serve` subprocess,
speaking a real recorded question (tests/data/en_dublin_q.wav); and the turn bookkeeping the
command (and benchmarks/realtime_latency.py) rely on, replayed from a scripted timeline."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydantic
import pytest
import soundfile as sf
from openai.types.realtime import RealtimeServerEvent

from cosyagent.talk import Stamped, TurnCollector, TurnResult
from cosyagent.talk.console import LiveTranscript, print_summary
from cosyagent.talk.playback import Player, PlayerChoice, find_player
from tests.e2e.conftest import free_port
from tests.support import dublin_question_alone

COSYAGENT = str(Path(sys.executable).with_name("cosyagent"))
# Short replies keep the test fast: reply audio is paced to real time.
CONFIG = """\
realtime:
  instructions: You are a friendly voice assistant. Answer in one short sentence.
  max_output_tokens: 40
"""


@pytest.fixture(scope="module")
def dublin_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dublin question alone: a second turn from the onset of the speaker's next word at the
    file's end would put the clip's end of speech after the reply's first audio."""
    path = tmp_path_factory.mktemp("clip") / "en_dublin_q.wav"
    sf.write(path, dublin_question_alone(16000), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("serve")
    config = folder / "config.yaml"
    config.write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with (folder / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [COSYAGENT, "serve", "--port", str(port), "--config", str(config), "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 45.0
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                pytest.fail(f"server did not become healthy:\n{(folder / 'serve.log').read_text()[-2000:]}")
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _talk(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COSYAGENT, "talk", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_talk_speaks_a_real_question_and_saves_the_reply(server_url: str, dublin_wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    done = _talk(str(dublin_wav), "--url", server_url, "--out", str(out), "--timeout", "30", timeout=45)

    assert done.returncode == 0, done.stderr
    heard = [line for line in done.stdout.splitlines() if line.startswith("you said:")]
    assert any("dublin" in line.lower() for line in heard), done.stdout
    info = sf.info(str(out))
    assert info.samplerate == 24000 and info.channels == 1
    assert info.duration > 0.5, done.stdout
    match = re.search(r"^voice-to-voice: (\d+) ms", done.stdout, re.MULTILINE)
    assert match is not None, done.stdout
    assert 0 < int(match.group(1)) < 30_000


def test_talk_to_a_closed_port_fails_clearly(dublin_wav: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    done = _talk(str(dublin_wav), "--url", url, "--out", str(tmp_path / "reply.wav"), "--timeout", "10", timeout=30)

    assert done.returncode != 0
    assert "cannot reach" in done.stderr and url in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "reply.wav").exists()


def test_talk_streams_what_was_heard_before_the_agents_words(server_url: str, dublin_wav: Path, tmp_path: Path) -> None:
    """Each line is on stdout while the turn still runs (not all at the end), in the order it
    happened: what the server heard, the agent's words, then the summary."""
    out = tmp_path / "reply.wav"
    command = [COSYAGENT, "talk", str(dublin_wav), "--url", server_url, "--out", str(out), "--no-play"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as talk:
        assert talk.stdout is not None
        lines = [(line.rstrip("\n"), talk.poll() is None) for line in talk.stdout]
        assert talk.wait(timeout=45) == 0, talk.stderr.read() if talk.stderr else ""

    texts = [text for text, _ in lines]
    heard = next(i for i, text in enumerate(texts) if text.startswith("you said:"))
    answered = next(i for i, text in enumerate(texts) if text.startswith("agent: "))
    summary = next(i for i, text in enumerate(texts) if text.startswith("reply audio:"))
    assert texts[0].startswith("speaking ") and heard < answered < summary, texts
    assert "dublin" in texts[heard].lower() and len(texts[answered]) > len("agent: "), texts
    assert lines[heard][1], "'you said' was printed only once the command had finished"
    assert texts[-1].startswith("  ") and any(text.startswith("voice-to-voice:") for text in texts[summary:]), texts
    assert f"not played (--no-play), saved to {out}" in texts[summary], texts
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16") and info.duration > 0.5


def test_talk_stops_soon_on_a_clip_without_speech(server_url: str, tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros(24000 * 2, dtype=np.float32), 24000)
    started = time.monotonic()
    done = _talk(str(quiet), "--url", server_url, "--out", str(tmp_path / "reply.wav"), "--timeout", "60", timeout=45)

    assert (done.returncode, done.stderr) == (2, f"cosyagent talk: no speech was detected in {quiet}\n")
    assert time.monotonic() - started < 15.0  # the clip, its trailing silence and the grace; not --timeout
    assert not (tmp_path / "reply.wav").exists()


def _fails_with(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.startswith("cosyagent talk: ") and done.stderr.count("\n") == 1, done.stderr
    assert all(fragment in done.stderr for fragment in fragments), done.stderr


def test_talk_explains_each_mistake_in_one_line(dublin_wav: Path, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "notes.txt").write_text("not audio at all\n")

    _fails_with(_talk(str(tmp_path / "missing.wav"), timeout=30), f"no such file: {tmp_path / 'missing.wav'}")
    _fails_with(_talk(str(tmp_path / "notes.txt"), timeout=30), "notes.txt is not an audio file")
    _fails_with(_talk(str(dublin_wav), "--url", f"{closed}/api", timeout=30), "the URL must end in /v1, e.g. http://")
    _fails_with(
        _talk(str(dublin_wav), "--url", f"{closed}/v1", timeout=30),
        "Start one with `cosyagent serve` in another terminal",
    )

    fixed_up = _talk(str(dublin_wav), "--url", closed, "--out", str(tmp_path / "reply.wav"), timeout=30)
    note, refused = fixed_up.stderr.splitlines()
    assert note == f"cosyagent talk: using {closed}/v1 (the URL must end in /v1)", fixed_up.stderr
    assert fixed_up.returncode == 2 and f"{closed}/v1: nothing is listening there" in refused


_USAGE = {"type": "duration", "seconds": 1.0}
_EVENTS: pydantic.TypeAdapter[RealtimeServerEvent] = pydantic.TypeAdapter(RealtimeServerEvent)


def _event(at: float, kind: str, **fields: Any) -> Stamped:
    return Stamped(at, _EVENTS.validate_python({"type": kind, "event_id": "event_x", **fields}))


def _audio(at: float, response_id: str) -> Stamped:
    ids = {"item_id": "item_a", "output_index": 0, "content_index": 0}
    return _event(at, "response.output_audio.delta", response_id=response_id, delta="AAAAAAAA", **ids)


def _done(at: float, response_id: str, status: str, **extra: Any) -> Stamped:
    return _event(at, "response.done", response={"id": response_id, "status": status}, **extra)


def test_turn_collector_skips_an_interrupted_reply_and_flags_late_audio() -> None:
    """speech ends at t=10; its first reply is cancelled by a second burst of speech, whose
    reply completes; one audio delta of the cancelled reply arrives after its response.done."""
    timeline = [
        _event(10.7, "input_audio_buffer.speech_stopped", audio_end_ms=10700, item_id="item_1"),
        _event(
            10.8,
            "conversation.item.input_audio_transcription.completed",
            item_id="item_1",
            content_index=0,
            transcript="how do I get to Dublin?",
            usage=_USAGE,
        ),
        _event(10.8, "response.created", response={"id": "resp_1", "status": "in_progress"}),
        _audio(11.5, "resp_1"),
        _event(11.6, "input_audio_buffer.speech_started", audio_start_ms=11400, item_id="item_2"),
        _done(11.7, "resp_1", "cancelled"),
        _audio(11.75, "resp_1"),  # after its response.done: must be counted
        _event(12.4, "input_audio_buffer.speech_stopped", audio_end_ms=12400, item_id="item_2"),
        _event(
            12.5,
            "conversation.item.input_audio_transcription.completed",
            item_id="item_2",
            content_index=0,
            transcript="And...",
            usage=_USAGE,
        ),
        _event(12.5, "response.created", response={"id": "resp_2", "status": "in_progress"}),
        _event(
            13.0,
            "response.output_audio_transcript.delta",
            response_id="resp_2",
            item_id="item_b",
            output_index=0,
            content_index=0,
            delta="Take the train.",
        ),
        _audio(13.0, "resp_2"),
        _audio(13.1, "resp_2"),
        _done(14.0, "resp_2", "completed", x_cosyagent_timings_ms={"llm_first_token": 80, "tts_first_audio": 450.5}),
    ]
    collector = TurnCollector(speech_end_at=10.0)
    finished = [collector.feed(item) for item in timeline]

    assert finished == [False] * (len(timeline) - 1) + [True]
    result = collector.result
    assert result.user_transcripts == ["how do I get to Dublin?", "And..."]
    assert (result.response_id, result.status, result.reply_text) == ("resp_2", "completed", "Take the train.")
    assert result.interrupted_responses == ["resp_1"]
    assert result.late_audio_deltas == 1
    assert result.voice_to_voice_ms == 3000.0  # from the end of speech to resp_2's first audio
    assert (result.end_of_turn_ms, result.asr_ms) == (2400.0, 100.0)  # the stop that led to resp_2
    assert result.vad_audio_end_ms == 12400
    assert result.reply_audio_s == 2 * 6 / 48000  # two 6-byte deltas of pcm16 at 24 kHz
    # the first delta's 0.125 ms of audio ran out ~100 ms before the second came
    assert result.stall_ms == pytest.approx(100.0 - 1000 * 6 / 48000)
    assert result.server_timings_ms == {"llm_first_token": 80.0, "tts_first_audio": 450.5}
    assert collector.feed(_audio(14.1, "resp_2")) and result.late_audio_deltas == 2


def _cut_at_the_cap(at: float, response_id: str) -> Stamped:
    details = {"type": "incomplete", "reason": "max_output_tokens"}
    return _event(at, "response.done", response={"id": response_id, "status": "incomplete", "status_details": details})


def test_a_reply_cut_at_the_token_cap_answers_the_turn() -> None:
    collector = TurnCollector(speech_end_at=10.0)
    timeline = [_event(10.1, "response.created", response={"id": "resp_1", "status": "in_progress"})]
    timeline += [_audio(10.5, "resp_1"), _cut_at_the_cap(11.0, "resp_1")]
    assert [collector.feed(item) for item in timeline] == [False, False, True]
    assert collector.result.status == "incomplete" and not collector.result.interrupted_responses


def _words(at: float, response_id: str, delta: str) -> Stamped:
    ids = {"item_id": "item_b", "output_index": 0, "content_index": 0}
    return _event(at, "response.output_audio_transcript.delta", response_id=response_id, delta=delta, **ids)


def _heard(at: float, item_id: str, transcript: str) -> Stamped:
    fields = {"item_id": item_id, "content_index": 0, "transcript": transcript, "usage": _USAGE}
    return _event(at, "conversation.item.input_audio_transcription.completed", **fields)


def _created(at: float, response_id: str) -> Stamped:
    return _event(at, "response.created", response={"id": response_id, "status": "in_progress"})


async def test_live_transcript_prints_words_as_they_arrive_and_marks_a_cut_reply(tmp_path: Path) -> None:
    played = tmp_path / "played.raw"
    player = Player(PlayerChoice(("sh", "-c", f"cat > {played}")))
    await player.start()
    out = io.StringIO()
    live = LiveTranscript(out, player)
    shown: list[str] = []
    for item in [
        _heard(1.0, "item_1", " how do I get to Dublin? "),
        _created(1.1, "resp_1"),
        _words(1.2, "resp_1", "Take"),
        _audio(1.2, "resp_1"),
        _done(1.3, "resp_1", "cancelled"),  # more speech in the clip cut it short
        _heard(1.4, "item_2", "And..."),
        _created(1.5, "resp_2"),
        _words(1.6, "resp_2", " Take the"),
        _words(1.7, "resp_2", " train."),
        _audio(1.7, "resp_1"),  # of the cancelled reply: not played
        _audio(1.8, "resp_2"),
        _done(1.9, "resp_2", "completed"),
        _created(2.0, "resp_3"),
        _words(2.1, "resp_3", "First take the"),
        _cut_at_the_cap(2.2, "resp_3"),
    ]:
        live.show(item)
        shown.append(out.getvalue())
    await player.finish()

    assert shown[0] == "you said: how do I get to Dublin?\n"  # on stdout as soon as it is heard
    assert shown[2].endswith("agent: Take")  # a word at a time, before the reply ends
    assert out.getvalue() == (
        "you said: how do I get to Dublin?\nagent: Take [interrupted]\nyou said: And...\nagent: Take the train.\n"
        "agent: First take the [cut: max_output_tokens]\n"
    )
    assert played.read_bytes() == bytes(12) and player.failure is None


async def test_a_player_that_fails_is_reported_not_raised() -> None:
    player = Player(PlayerChoice(("sh", "-c", "echo 'no such device' >&2; exit 3")))
    await player.start()
    await asyncio.sleep(0.2)
    player.write(bytes(4800))
    await player.finish()
    assert player.failure is not None and player.failure.startswith("sh "), player.failure


def test_find_player_needs_both_an_output_and_a_player(tmp_path: Path) -> None:
    bin_dir, no_device = tmp_path / "bin", tmp_path / "snd"
    bin_dir.mkdir()
    (bin_dir / "paplay").write_text("#!/bin/sh\n")
    (bin_dir / "paplay").chmod(0o755)
    runtime_dir = str(tmp_path / "run")

    with_pulse = find_player({"PATH": str(bin_dir), "PULSE_SERVER": "unix:/tmp/x"}, no_device)
    assert with_pulse.command is not None and with_pulse.name == "paplay" and "--rate=24000" in with_pulse.command
    bare = find_player({"PATH": str(bin_dir), "XDG_RUNTIME_DIR": runtime_dir}, no_device)
    assert (bare.command, bare.reason) == (None, "no audio output device was found")
    no_player = find_player({"PATH": str(tmp_path), "PULSE_SERVER": "unix:/tmp/x"}, no_device)
    assert no_player.command is None and no_player.reason.startswith("no audio player was found")


def test_summary_says_when_the_server_ended_the_turn_before_the_clips_speech() -> None:
    """The CI run's case: the server's turn ended 394 ms before the clip's speech did (the onset
    of a next word at the clip's edge), and the reply's first audio came as the clip ended."""
    early = TurnResult(speech_end_at=10.0, stopped_at=9.606, first_audio_at=9.9996)
    out = io.StringIO()
    print_summary(early, "/tmp/reply.wav", "not played (--no-play)", out)
    assert "voice-to-voice: 0 ms (end of speech" in out.getvalue()  # not "-0 ms"
    assert "note: the server ended the turn 394 ms before the clip's speech ended" in out.getvalue()

    in_time = TurnResult(speech_end_at=10.0, stopped_at=10.6, first_audio_at=11.0)
    out = io.StringIO()
    print_summary(in_time, "/tmp/reply.wav", "not played (--no-play)", out)
    assert "voice-to-voice: 1000 ms" in out.getvalue() and "note:" not in out.getvalue()
