"""``/v1/audio/speech`` with ``stream_format: "sse"`` and ``timestamps``: real Piper synthesis on the
shared real server, over a real socket. The word times are checked against Whisper's word timestamps
of the audio the client received; bad requests get precise 400s."""

from __future__ import annotations

import base64
import json
import statistics
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI, BadRequestError

from cosyagent.audio.pcm import pcm16_to_float, resample
from cosyagent.engines.visemes import VISEME_NAMES
from cosyagent.engines.whisper_asr import default_model_path as whisper_path
from tests.alignment import normalized
from tests.e2e.conftest import LiveServer

TEXT = (
    "Please remember to bring your umbrella, because it might rain this afternoon. "
    "My favourite breakfast is toast with butter and a cup of strong coffee."
)


async def sse(server: LiveServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(timeout=120) as http,
        http.stream("POST", f"{server.base_url}/audio/speech", json=body) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


async def test_sse_timestamps_come_between_the_deltas_before_their_audio(live_server: LiveServer) -> None:
    body = {"input": TEXT, "voice": "joe", "response_format": "pcm", "stream_format": "sse"}
    events = await sse(live_server, {**body, "timestamps": ["word", "viseme"]})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.audio.timestamps" and kinds[-1] == "speech.audio.done"
    assert set(kinds) == {"speech.audio.timestamps", "speech.audio.delta", "speech.audio.done"}
    assert kinds.count("speech.audio.timestamps") >= 2  # one per clause: between the deltas
    words: list[dict[str, Any]] = []
    visemes: list[dict[str, Any]] = []
    audio_ms = 0.0
    for event in events:
        if event["type"] == "speech.audio.delta":
            audio_ms += pcm16_to_float(base64.b64decode(event["audio"])).size / 24.0
        elif event["type"] == "speech.audio.timestamps":
            assert all(mark["start_ms"] >= audio_ms - 5 for mark in event["words"] + event["visemes"])
            words += event["words"]
            visemes += event["visemes"]
    assert [w["text"] for w in words] == TEXT.split() or [normalized(w["text"]) for w in words] == [
        normalized(t) for t in TEXT.split()
    ]
    assert all(v["viseme"] in VISEME_NAMES for v in visemes) and visemes[-1]["viseme"] == "sil"
    assert words[-1]["end_ms"] <= audio_ms

    from faster_whisper import WhisperModel

    audio = pcm16_to_float(b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"))
    whisper = WhisperModel(str(whisper_path()), device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = whisper.transcribe(
        resample(audio, 24000, 16000),
        language="en",
        beam_size=5,
        temperature=0.0,
        word_timestamps=True,
        condition_on_previous_text=False,
    )
    heard = [(normalized(w.word), w.start * 1000) for s in segments for w in (s.words or [])]
    diffs: list[float] = []
    position = 0
    for word in words:
        for k in range(position, len(heard)):
            if heard[k][0] == normalized(word["text"]):
                diffs.append(abs(heard[k][1] - word["start_ms"]))
                position = k + 1
                break
    assert len(diffs) >= 0.8 * len(words)
    median, p90 = statistics.median(diffs), float(np.percentile(diffs, 90))
    print(f"speech SSE word starts vs Whisper: {len(diffs)}/{len(words)}, median {median:.0f} ms, p90 {p90:.0f} ms")
    assert median <= 80
    assert p90 <= 200  # see tests/engines/test_engine_piper_timings.py: Whisper tiny.en's misses

    # Without the field, the stream is as it always was.
    plain = [e["type"] for e in await sse(live_server, {**body, "input": "Hello there."})]
    assert "speech.audio.timestamps" not in plain and plain[-1] == "speech.audio.done"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"timestamps": ["word", "phoneme"], "stream_format": "sse"}, "timestamps[1]"),
        ({"timestamps": "word", "stream_format": "sse"}, "timestamps"),
        ({"timestamps": ["word"]}, "timestamps"),  # audio streams have no place for events
    ],
)
async def test_bad_timestamp_requests_are_refused_precisely(
    live_server: LiveServer, extra: dict[str, Any], param: str
) -> None:
    client = AsyncOpenAI(base_url=live_server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(BadRequestError) as refused:
        await client.audio.speech.create(
            model="tts-1",
            input="Hello.",
            voice="joe",
            response_format="pcm",
            extra_body=extra,
            stream_format=extra.get("stream_format", "audio"),
        )
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == param, error
    assert error["type"] == "invalid_request_error"
