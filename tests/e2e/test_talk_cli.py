"""`cosyagent talk` end to end: the real command against a real `cosyagent serve` subprocess,
speaking a real recorded question (tests/data/en_dublin_q.wav); and the turn bookkeeping the
command (and benchmarks/realtime_latency.py) rely on, replayed from a scripted timeline."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
import soundfile as sf
from openai.types.realtime import RealtimeServerEvent

from cosyagent.talk import Stamped, TurnCollector
from tests.e2e.conftest import free_port

DATA = Path(__file__).resolve().parent.parent / "data"
COSYAGENT = str(Path(sys.executable).with_name("cosyagent"))
# Short replies keep the test fast: reply audio is paced to real time.
CONFIG = """\
realtime:
  instructions: You are a friendly voice assistant. Answer in one short sentence.
  max_output_tokens: 40
"""


@pytest.fixture(scope="module")
def dublin_wav() -> Path:
    return DATA / "en_dublin_q.wav"


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
    assert result.server_timings_ms == {"llm_first_token": 80.0, "tts_first_audio": 450.5}
    assert collector.feed(_audio(14.1, "resp_2")) and result.late_audio_deltas == 2
