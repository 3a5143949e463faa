"""``POST /v1/audio/transcriptions`` with the official openai SDK: real speech, every format.

This module's server requires an API key, so every call here also checks that a key
lets the client in (and the last tests that its absence keeps it out).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator

import httpx
import numpy as np
import openai
import pytest
import websockets
from openai import AsyncOpenAI

from tests.audio_formats import CONTAINERS, encode_as
from tests.e2e.audio_server import in_process_server, write_config
from tests.e2e.conftest import LiveServer
from tests.support import DATA, REFERENCES, read_clip, word_error_rate

CLIP = "en_philosophy_22s.wav"
REFERENCE = REFERENCES[CLIP]
KEY = "sk-transcribe-test"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    sections = {
        "server": {"api_keys": [KEY]},
        "limits": {"max_upload_mb": 5, "max_transcription_seconds": 90},
    }
    async with in_process_server(write_config(tmp_path_factory.mktemp("asr"), sections)) as live:
        yield live


def sdk(server: LiveServer, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=key, max_retries=0)


async def test_json_on_the_real_clip(server: LiveServer) -> None:
    with (DATA / CLIP).open("rb") as wav:
        result = await sdk(server).audio.transcriptions.create(model="whisper-1", file=wav)
    assert word_error_rate(REFERENCE, result.text) <= 0.2, result.text
    assert result.usage is not None and result.usage.type == "duration"


@pytest.mark.parametrize("container", sorted(CONTAINERS))
async def test_every_container_rate_and_channel_count(server: LiveServer, container: str) -> None:
    spec = CONTAINERS[container]
    data = encode_as(read_clip(CLIP, 16_000), 16_000, spec)
    result = await sdk(server).audio.transcriptions.create(
        model="whisper-1", file=(f"speech.{spec.suffix}", data, spec.mime), language="en"
    )
    assert word_error_rate(REFERENCE, result.text) <= 0.2, result.text


_SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
_VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def _seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def _check_cues(cues: list[tuple[float, float, str]]) -> None:
    assert cues, "no cues"
    previous_end = 0.0
    for start, end, text in cues:
        assert previous_end - 0.01 <= start < end <= 22.3, cues
        assert text.strip()
        previous_end = end
    assert word_error_rate(REFERENCE, " ".join(text for _, _, text in cues)) <= 0.2


async def test_srt_is_valid(server: LiveServer) -> None:
    with (DATA / CLIP).open("rb") as wav:
        srt = await sdk(server).audio.transcriptions.create(model="whisper-1", file=wav, response_format="srt")
    assert isinstance(srt, str)
    blocks = srt.strip().split("\n\n")
    cues = []
    for number, block in enumerate(blocks, start=1):
        index, times, *text = block.split("\n")
        assert index == str(number)
        match = re.fullmatch(f"{_SRT_TIME} --> {_SRT_TIME}", times)
        assert match, times
        cues.append((_seconds(match.groups()[:4]), _seconds(match.groups()[4:]), " ".join(text)))
    _check_cues(cues)


async def test_vtt_is_valid(server: LiveServer) -> None:
    with (DATA / CLIP).open("rb") as wav:
        vtt = await sdk(server).audio.transcriptions.create(model="whisper-1", file=wav, response_format="vtt")
    assert isinstance(vtt, str) and vtt.startswith("WEBVTT\n\n")
    cues = []
    for block in vtt[len("WEBVTT\n\n") :].strip().split("\n\n"):
        times, *text = block.split("\n")
        match = re.fullmatch(f"{_VTT_TIME} --> {_VTT_TIME}", times)
        assert match, times
        cues.append((_seconds(match.groups()[:4]), _seconds(match.groups()[4:]), " ".join(text)))
    _check_cues(cues)


async def test_verbose_json_has_segment_timestamps_and_text_is_plain(server: LiveServer) -> None:
    client = sdk(server)
    with (DATA / CLIP).open("rb") as wav:
        verbose = await client.audio.transcriptions.create(model="whisper-1", file=wav, response_format="verbose_json")
    assert verbose.language == "english" and abs(verbose.duration - 22.2) < 0.1
    assert verbose.segments and word_error_rate(REFERENCE, verbose.text) <= 0.2
    _check_cues([(s.start, s.end, s.text) for s in verbose.segments])
    with (DATA / CLIP).open("rb") as wav:
        text = await client.audio.transcriptions.create(model="whisper-1", file=wav, response_format="text")
    assert isinstance(text, str) and word_error_rate(REFERENCE, text) <= 0.2


async def test_what_the_recognizer_cannot_give_is_refused_not_left_out(server: LiveServer) -> None:
    # Word timestamps and logprobs: answered without them, a subtitle tool would get no words.
    client = sdk(server)
    refused = [
        ({"response_format": "verbose_json", "timestamp_granularities": ["word", "segment"]}, "unsupported_parameter"),
        ({"response_format": "json", "timestamp_granularities": ["segment"]}, "invalid_value"),  # OpenAI's rule
        ({"response_format": "verbose_json", "timestamp_granularities": ["sentence"]}, "invalid_value"),
        ({"include": ["logprobs"]}, "unsupported_parameter"),
    ]
    messages = []
    for fields, code in refused:
        with (DATA / "en_dublin_q.wav").open("rb") as wav, pytest.raises(openai.BadRequestError) as error:
            await client.audio.transcriptions.create(model="whisper-1", file=wav, **fields)  # type: ignore[call-overload]
        assert (error.value.code, error.value.param) == (code, next(iter(fields.keys() - {"response_format"})))
        messages.append(error.value.message)
    assert re.search(
        r"word timestamps are not available: the \S+ recognizer gives segment timestamps only$", messages[0]
    )
    plain = await _upload(server, (DATA / "en_dublin_q.wav").read_bytes(), timestamp_granularities="word")
    assert plain.status_code == 400 and plain.json()["error"]["param"] == "timestamp_granularities"  # curl's name too
    with (DATA / "en_dublin_q.wav").open("rb") as wav:
        segments = await client.audio.transcriptions.create(
            model="whisper-1", file=wav, response_format="verbose_json", timestamp_granularities=["segment"]
        )
    assert segments.segments and "dublin" in segments.text.lower()


async def test_stream_sends_deltas_then_done(server: LiveServer) -> None:
    with (DATA / CLIP).open("rb") as wav:
        stream = await sdk(server).audio.transcriptions.create(model="gpt-4o-transcribe", file=wav, stream=True)
        events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    assert len(kinds) >= 2
    done = events[-1]
    assert "".join(e.delta for e in events[:-1]).strip() == done.text  # type: ignore[union-attr]
    assert word_error_rate(REFERENCE, done.text) <= 0.2, done.text  # type: ignore[union-attr]


async def test_stream_of_a_long_recording_starts_before_the_end(server: LiveServer) -> None:
    lecture = encode_as(read_clip("en_lecture_60s.wav", 16_000), 16_000, CONTAINERS["ogg_opus"])
    started = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    stream = await sdk(server).audio.transcriptions.create(
        model="whisper-1", file=("lecture.ogg", lecture, "audio/ogg"), stream=True
    )
    async for event in stream:
        arrivals.append((time.monotonic() - started, event.type))
    deltas = [t for t, kind in arrivals if kind == "transcript.text.delta"]
    assert arrivals[-1][1] == "transcript.text.done" and len(deltas) >= 3
    assert deltas[0] < 0.7 * arrivals[-1][0], arrivals  # three windows: the first is out long before the end


async def _upload(server: LiveServer, data: bytes, name: str = "a.wav", **fields: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:  # the server runs in this event loop: never block it
        return await http.post(
            f"{server.base_url}/audio/transcriptions",
            files={"file": (name, data, "application/octet-stream")},
            data={"model": "whisper-1", **fields},
            headers={"Authorization": f"Bearer {KEY}"},
        )


async def test_bad_uploads_get_openai_errors(server: LiveServer) -> None:
    wav = (DATA / CLIP).read_bytes()
    cases = [
        (await _upload(server, b"this is a text file, not audio\n" * 50, "notes.txt"), 400, "file", "invalid_audio"),
        (await _upload(server, b""), 400, "file", "invalid_audio"),
        (await _upload(server, b"\x89PNG\r\n\x1a\n" + bytes(2000), "picture.png"), 400, "file", "invalid_audio"),
        (await _upload(server, wav, response_format="diarized_json"), 400, "response_format", "unsupported_format"),
        (await _upload(server, wav, language="fr"), 400, "language", "unsupported_language"),
        (await _upload(server, bytes(6 * 2**20)), 413, None, "request_too_large"),
    ]
    for response, status, param, code in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, code) and error["message"], error
    french = cases[4][0].json()["error"]["message"]
    assert french.startswith("language 'fr' is not supported by the ")
    assert french.endswith("; it transcribes English only")
    async with httpx.AsyncClient(timeout=60) as http:
        missing = await http.post(
            f"{server.base_url}/audio/transcriptions", data={"model": "whisper-1"},
            headers={"Authorization": f"Bearer {KEY}"}, files={"other": ("x", b"x")},
        )  # fmt: skip
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"


async def test_audio_over_the_duration_limit_is_refused(server: LiveServer) -> None:
    lecture = read_clip("en_lecture_60s.wav", 16_000)
    long_audio = encode_as(np.concatenate([lecture, lecture]), 16_000, CONTAINERS["ogg_opus"])  # 120 s > 90 s
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(server).audio.transcriptions.create(model="whisper-1", file=("long.ogg", long_audio, "audio/ogg"))
    assert caught.value.code == "audio_too_long" and "90 s" in caught.value.message


async def test_without_the_key_the_api_and_the_socket_are_closed(server: LiveServer) -> None:
    with pytest.raises(openai.AuthenticationError), (DATA / CLIP).open("rb") as wav:
        await sdk(server, key="wrong").audio.transcriptions.create(model="whisper-1", file=wav)
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await http.get(f"{server.base_url}/voices")).status_code == 401
    with pytest.raises(Exception, match="401"):
        async with sdk(server, key="wrong").realtime.connect(model="cosyagent-realtime") as conn:
            await conn.recv()
    async with sdk(server).realtime.connect(model="cosyagent-realtime") as conn:
        assert (await conn.recv()).type == "session.created"


async def test_a_browser_sends_the_key_as_a_websocket_subprotocol(server: LiveServer) -> None:
    """As OpenAI's browser SDK does (browsers cannot set headers on a WebSocket): the server
    must pick "realtime" from the offered subprotocols, or the browser drops the socket."""
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=cosyagent-realtime"
    offered = ["realtime", f"openai-insecure-api-key.{KEY}", "openai-beta.realtime-v1"]
    async with websockets.connect(url, subprotocols=offered) as socket:
        assert socket.subprotocol == "realtime"
        assert json.loads(await socket.recv())["type"] == "session.created"
    wrong = ["realtime", "openai-insecure-api-key.wrong"]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, subprotocols=wrong):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == "invalid_api_key"
