"""The voice library over HTTP on real servers: create, list, speak, restart, delete; and bad input.

The restart is a second server, ``cosyagent serve`` in a child process, on the same data
directory: it must find the voices, say in its log which ones it warmed, and speak them.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from openai import AsyncOpenAI

from cosyagent.audio.containers import decode_audio
from tests.audio_formats import CONTAINERS, encode_as
from tests.e2e.audio_server import in_process_server, spawned_server, write_config
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_client import said_to_its_end
from tests.support import DATA, REFERENCES, read_clip, word_error_rate

BLEND = {"jf_alpha": 0.7, "jm_kumo": 0.3}
SPOKEN = "Hello, this voice is a mix of two voices."


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    # Kokoro, selected explicitly: its voices blend (Piper, the default, has one voice and cannot).
    sections = {
        "limits": {"max_upload_mb": 3},
        "tts": {"engine": "kokoro"},
        "realtime": {"voice": "jf_alpha"},
        "llm": {"embedded_model": "smollm2"},  # no conversation here: the lightest model
    }
    config = write_config(tmp_path_factory.mktemp("voices"), sections)
    async with in_process_server(config) as live:
        yield live


def voices_dir(server: LiveServer) -> Path:
    return Path(server.runtime.config.server.data_dir) / "voices"


def sdk(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)


async def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=120) as http:  # never block the loop the server runs in
        return await http.request(method, url, **kwargs)


async def speak(url: str, voice: Any, asr_server: LiveServer) -> str:
    async with sdk(url).audio.speech.with_streaming_response.create(
        model="tts-1", voice=voice, input=SPOKEN, response_format="wav"
    ) as response:
        data = b"".join([chunk async for chunk in response.iter_bytes()])
    audio = decode_audio(data, sample_rate=16_000).samples
    assert audio.size / 16_000 > 0.5
    return (await asr_server.runtime.asr.transcribe(audio)).text


async def test_create_list_speak_restart_delete(server: LiveServer) -> None:
    base = server.base_url
    blend = await request("POST", f"{base}/voices", json={"name": "Warm mix", "blend": BLEND})
    assert blend.status_code == 201, blend.text
    blend_id = blend.json()["id"]
    assert blend.json() | {"created_at": 0} == {
        "id": blend_id, "object": "audio.voice", "name": "Warm mix", "type": "blend", "created_at": 0,
        "usable": True, "blend": BLEND,
    }  # fmt: skip

    tax = (DATA / "en_wealth_tax_q.wav").read_bytes()
    cloned = await request("POST", f"{base}/voices", files={"file": ("tax.wav", tax)}, data={"name": "Tax question"})
    assert cloned.status_code == 201, cloned.text
    clone = cloned.json()
    assert clone["type"] == "audio_sample" and clone["text_source"] == "asr" and not clone["usable"]
    assert word_error_rate(REFERENCES["en_wealth_tax_q.wav"], clone["text"]) <= 0.3, clone["text"]
    assert "cannot clone" in clone["note"] and abs(clone["duration_s"] - 3.8) < 0.1

    dublin = encode_as(read_clip("en_dublin_q.wav", 16_000), 16_000, CONTAINERS["webm_opus_stereo"])
    fields = {"name": "Dublin", "text": "How do I get to Dublin?"}
    given = await request("POST", f"{base}/voices", files={"file": ("d.webm", dublin)}, data=fields)
    assert given.status_code == 201 and given.json()["text"] == "How do I get to Dublin?"
    assert given.json()["text_source"] == "given"
    ids = {blend_id, clone["id"], given.json()["id"]}

    listed = (await request("GET", f"{base}/voices")).json()["data"]
    assert {"jf_alpha", "jm_kumo"} <= {v["id"] for v in listed if v["type"] == "builtin"}
    assert {v["id"] for v in listed if v["type"] != "builtin"} == ids
    speakers = (await request("GET", f"{base}/speakers")).json()
    assert "Warm mix" in speakers and "jf_alpha" in speakers and "Tax question" not in speakers

    assert (await request("GET", f"{base}/voices/{clone['id']}")).json()["name"] == "Tax question"
    clip = await request("GET", f"{base}/voices/{clone['id']}/audio")
    assert clip.headers["content-type"] == "audio/wav"
    assert abs(sf.info(io.BytesIO(clip.content)).duration - 3.8) < 0.1

    for voice in ({"id": blend_id}, "Warm mix"):
        assert word_error_rate(SPOKEN, await speak(base, voice, server)) <= 0.2
    refused = await request("POST", f"{base}/audio/speech", json={"input": "Hi.", "voice": clone["id"]})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "voice_not_usable"

    # A second server on the same data directory: a restart.
    config = Path(server.runtime.config.server.data_dir).parent / "config.yaml"
    with spawned_server(config) as (url, log):
        listed_again = (await request("GET", f"{url}/voices")).json()["data"]
        assert {v["id"] for v in listed_again if v["type"] != "builtin"} == ids
        assert {v["id"]: v["usable"] for v in listed_again if v["id"] in ids}[blend_id]
        warm_line = next(line for line in log.read_text().splitlines() if "warmed for" in line)
        assert f"Warm mix ({blend_id})" in warm_line.split("stored only")[0]
        assert f"Tax question ({clone['id']})" in warm_line.split("stored only")[1]
        assert word_error_rate(SPOKEN, await speak(url, {"id": blend_id}, server)) <= 0.2
        for voice_id in ids:
            deleted = await request("DELETE", f"{url}/voices/{voice_id}")
            assert deleted.json() == {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}
            assert (await request("GET", f"{url}/voices/{voice_id}")).status_code == 404
        assert (await request("DELETE", f"{url}/voices/{blend_id}")).status_code == 404
    assert list(voices_dir(server).iterdir()) == []  # nothing left, not even a temp file


async def test_the_openai_sdk_voices_resource_works(server: LiveServer) -> None:
    client = sdk(server.base_url)
    with (DATA / "en_dublin_q.wav").open("rb") as sample:
        voice = await client.audio.voices.create(name="SDK voice", audio_sample=sample, consent="cons_local")
    assert voice.id.startswith("voice_") and voice.object == "audio.voice" and voice.type == "audio_sample"
    deleted = await client.audio.voices.delete(voice.id)
    assert deleted.deleted and deleted.id == voice.id


async def test_a_realtime_session_takes_any_voice_id_the_engine_can_speak(server: LiveServer) -> None:
    url = f"{server.base_url}/voices"
    blend = (await request("POST", url, json={"name": "Session mix", "blend": BLEND})).json()
    wav = (DATA / "en_dublin_q.wav").read_bytes()
    clone = (await request("POST", url, files={"file": ("d.wav", wav)}, data={"name": "C"})).json()
    try:
        async with sdk(server.base_url).realtime.connect(model="cosyagent-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
            # A clip Kokoro cannot clone: refused where it is chosen, not by every reply after it.
            await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": clone["id"]}}})
            refused = await asyncio.wait_for(_next(conn, "error"), 20)
            assert (refused.error.code, refused.error.param) == ("voice_not_usable", "session.audio.output.voice")
            message = refused.error.message
            assert message.startswith(f"voice {clone['id']!r} cannot be spoken: ") and "clone" in message, message
            session = {"type": "realtime", "audio": {"output": {"voice": blend["id"]}}, "max_output_tokens": 12}
            await conn.session.update(session=session)  # type: ignore[arg-type]
            updated = await asyncio.wait_for(_next(conn, "session.updated"), 20)
            assert updated.session.audio.output.voice == blend["id"]
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
            )
            await conn.response.create()
            audio = b""
            done = None
            while done is None:
                event = await asyncio.wait_for(conn.recv(), 60)
                if event.type == "response.output_audio.delta":
                    audio += base64.b64decode(event.delta)
                elif event.type == "response.done":
                    done = event
            assert said_to_its_end(done.response), done.response
            assert len(audio) > 24_000 * 2 * 0.3  # at least 0.3 s of speech in the blended voice
    finally:
        for voice_id in (blend["id"], clone["id"]):
            await request("DELETE", f"{server.base_url}/voices/{voice_id}")


async def _next(conn: Any, kind: str) -> Any:
    while True:
        event = await conn.recv()
        if event.type == kind:
            return event


def _wav(seconds: float) -> bytes:
    out = io.BytesIO()
    sf.write(out, read_clip("en_lecture_60s.wav", 16_000)[: int(seconds * 16_000)], 16_000, format="WAV")
    return out.getvalue()


BAD = [
    ("files", {"file": ("n.txt", b"plain text, not audio " * 40)}, {"name": "x"}, 400, "file", "invalid_audio"),
    ("files", {"file": ("s.wav", _wav(0.5))}, {"name": "x"}, 400, "file", "invalid_clip_duration"),
    ("files", {"file": ("l.wav", _wav(45.0))}, {"name": "x"}, 400, "file", "invalid_clip_duration"),
    ("files", {"file": ("a.wav", _wav(2.0))}, {}, 400, "name", "missing_required_parameter"),
    ("files", {"other": ("a.wav", _wav(2.0))}, {"name": "x"}, 400, "file", "missing_required_parameter"),
    ("files", {"file": ("a.wav", _wav(2.0))}, {"name": "jf_alpha"}, 409, "name", "voice_name_taken"),
    ("files", {"file": ("a.wav", _wav(2.0))}, {"name": "a\nb"}, 400, "name", "invalid_value"),
    ("files", {"file": ("big.wav", bytes(4 * 2**20))}, {"name": "x"}, 413, None, "request_too_large"),
    ("json", {"name": "x", "blend": {"alloy": 1.0}}, None, 400, "blend", "invalid_value"),
    ("json", {"name": "x", "blend": {"jf_alpha": -1.0}}, None, 400, "blend", "invalid_value"),
    ("json", {"name": "x", "blend": {}}, None, 400, "blend", "invalid_value"),
    ("json", {"name": "x"}, None, 400, "blend", "missing_required_parameter"),
    ("json", {"blend": BLEND}, None, 400, "name", "missing_required_parameter"),
    ("json", {"name": "x", "blend": BLEND, "colour": "red"}, None, 400, "colour", None),
    ("content", b"name=x", None, 415, None, "unsupported_media_type"),
]


@pytest.mark.parametrize(
    ("kind", "body", "fields", "status", "param", "code"), BAD, ids=[f"{b[4]}-{b[5]}" for b in BAD]
)
async def test_bad_voice_uploads_get_openai_errors_and_write_nothing(
    server: LiveServer, kind: str, body: Any, fields: Any, status: int, param: str | None, code: str | None
) -> None:
    before = sorted(p.name for p in voices_dir(server).iterdir()) if voices_dir(server).exists() else []
    kwargs: dict[str, Any] = {kind: body}
    if fields is not None:
        kwargs["data"] = fields
    if kind == "content":
        kwargs["headers"] = {"content-type": "text/plain"}
    response = await request("POST", f"{server.base_url}/voices", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    after = sorted(p.name for p in voices_dir(server).iterdir()) if voices_dir(server).exists() else []
    assert after == before


@pytest.mark.parametrize("voice_id", ["a.b", "%2E%2E", "a%2Fb", "..%2F..%2Fetc", "a%5Cb", "voice%00x", "x" * 65])
async def test_ids_with_path_separators_or_dots_are_refused(server: LiveServer, voice_id: str) -> None:
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/audio")):
        response = await request(method, f"{server.base_url}/voices/{voice_id}{suffix}")
        assert response.status_code == 400, (method, suffix, response.text)
        assert response.json()["error"]["code"] == "invalid_voice_id"


async def test_unknown_and_builtin_voices(server: LiveServer) -> None:
    missing = await request("GET", f"{server.base_url}/voices/voice_0000000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "voice_not_found"
    builtin = await request("DELETE", f"{server.base_url}/voices/jf_alpha")
    assert builtin.status_code == 400 and builtin.json()["error"]["code"] == "builtin_voice"
    assert (await request("GET", f"{server.base_url}/voices/jf_alpha")).json()["type"] == "builtin"
    assert (await request("GET", f"{server.base_url}/voices/jf_alpha/audio")).status_code == 404
