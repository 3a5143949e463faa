"""API keys, CORS, body limits and the OpenAI error shape, on the real app without loading models.

The app is built around a Runtime whose engines are never loaded (no lifespan runs):
what is tested here happens before a route needs a model, or on routes that need none.
The end-to-end tests repeat the essentials against a real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from cosyagent.config import load_config
from cosyagent.runtime import Runtime
from cosyagent.web.app import create_app

# A loopback Host: the server refuses names it does not know (DNS rebinding; web/local_guard.py).
LOCAL = "http://127.0.0.1"
KEY = "sk-test-123"


def make_app(tmp_path: Path, **server: Any) -> FastAPI:
    lines = [f"  data_dir: {tmp_path / 'data'}"] + [f"  {k}: {v!r}" for k, v in server.items()]
    config_file = tmp_path / "config.yaml"
    config_file.write_text("server:\n" + "\n".join(lines) + "\nlimits:\n  max_upload_mb: 1\n")
    return create_app(Runtime.from_config(load_config(config_file, environ={})))


ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/cosyagent-realtime"),
    ("GET", "/v1/voices"),
    ("POST", "/v1/voices"),
    ("GET", "/v1/voices/voice_x"),
    ("GET", "/v1/voices/voice_x/audio"),
    ("DELETE", "/v1/voices/voice_x"),
    ("GET", "/v1/audio/voices"),
    ("GET", "/v1/speakers"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/audio/transcriptions"),
    ("GET", "/v1/no-such-route"),
]


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(make_app(tmp_path, api_keys=[KEY, "second-key"]), base_url=LOCAL)


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, None),
        ("Bearer wrong", "invalid_api_key"),
        (f"Basic {KEY}", "invalid_api_key"),
        ("Bearer ", "invalid_api_key"),
    ],
)
def test_every_v1_route_needs_a_valid_key(
    client: TestClient, method: str, path: str, authorization: str | None, code: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and error["message"]


@pytest.mark.parametrize("key", [KEY, "second-key"])
def test_a_valid_key_passes(client: TestClient, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/voices", headers=headers).status_code == 200
    assert client.get("/v1/speakers", headers=headers).json() == ["joe"]  # Piper's one voice, known before it loads
    assert client.get("/v1/voices/voice_x", headers=headers).status_code == 404


def test_the_realtime_socket_needs_a_key(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect("ws://127.0.0.1/v1/realtime", headers=headers),
        ):
            pass
        assert denied.value.status_code == 401
        assert denied.value.json()["error"]["message"]


def test_without_keys_nothing_is_asked(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path), base_url=LOCAL)
    assert client.get("/v1/voices").status_code == 200
    assert client.get("/v1/speakers", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path), base_url=LOCAL)
    response = client.get("/v1/voices", headers={"Origin": "https://app.example.org"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/v1/audio/speech",
        headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_the_configured_origins_only(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path, api_keys=[KEY], cors_origins=["https://app.example.org"]), base_url=LOCAL)
    preflight = client.options(
        "/v1/audio/speech",
        headers={
            "Origin": "https://app.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200  # no key needed for a preflight
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.org"
    refused = client.get("/v1/voices", headers={"Origin": "https://app.example.org"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example.org"
    other = client.get("/v1/voices", headers={"Origin": "https://evil.example.org", "Authorization": f"Bearer {KEY}"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_uploads_over_the_limit_get_413_declared_or_streamed(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path), base_url=LOCAL)
    big = bytes(1_200_000)  # the limit is 1 MiB here
    declared = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", big, "audio/wav")})
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:
        boundary = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        yield boundary
        for _ in range(20):
            yield bytes(100_000)
        yield b"\r\n--XyZ--\r\n"

    streamed = client.post(
        "/v1/voices", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=XyZ"}
    )
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"
    assert not (tmp_path / "data").exists()  # nothing was written


def test_errors_have_the_openai_shape_on_v1_only(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path), base_url=LOCAL)
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    invalid = client.post("/v1/audio/speech", json={"voice": "jf_alpha"})
    assert invalid.status_code == 400
    assert invalid.json()["error"] == {
        "message": "missing required parameter: 'input'",
        "type": "invalid_request_error",
        "param": "input",
        "code": "missing_required_parameter",
    }
    bad_json = client.post("/v1/audio/speech", content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    assert "detail" in client.get("/no-such-page-anywhere").json()  # other paths keep FastAPI's shape


def test_a_model_is_retrieved_by_its_id_even_one_with_a_slash(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path), base_url=LOCAL)
    for listed in client.get("/v1/models").json()["data"]:
        assert client.get(f"/v1/models/{listed['id']}").json() == listed
    missing = client.get("/v1/models/Qwen/Qwen3-8B")  # an id of this shape reaches the route, not "no route"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert "'Qwen/Qwen3-8B' does not exist" in missing.json()["error"]["message"]


def test_a_form_or_text_body_on_a_json_route_says_what_is_expected(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path), base_url=LOCAL)
    for body in ({"data": {"input": "hi", "voice": "jf_alpha"}}, {"content": b"input=hi"}, {"json": ["hi"]}):
        answer = client.post("/v1/audio/speech", **body)  # type: ignore[arg-type]
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "invalid_json", error
        assert "JSON object" in error["message"] and "application/json" in error["message"]


def test_the_schema_is_served_and_no_page_loads_scripts_from_a_cdn(tmp_path: Path) -> None:
    client = TestClient(make_app(tmp_path), base_url=LOCAL)
    assert client.get("/openapi.json").json()["info"]["title"] == "cosyagent"
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
