"""The one exception -> HTTP table: each domain error gets one status, type and code."""

from __future__ import annotations

import pytest

from cosyagent.audio.containers import AudioCodecError, AudioDecodeError, AudioTooLongError
from cosyagent.engines.base import EngineError, EngineUnavailableError
from cosyagent.voices.library import (
    InvalidVoiceError,
    VoiceIdNotFoundError,
    VoiceNameTakenError,
    VoiceNotFoundError,
)
from cosyagent.voices.synthesizer import VoiceUnavailableError
from cosyagent.web.errors import domain_error, error_event_body

CASES = [
    (VoiceIdNotFoundError("no voice with id 'x'", "voice_id"), 404, "voice_not_found", "voice_id"),
    (VoiceNotFoundError("unknown voice 'x'", "voice"), 400, "voice_not_found", "voice"),
    (VoiceNameTakenError("taken", "name"), 409, "voice_name_taken", "name"),
    (InvalidVoiceError("bad blend", "blend"), 400, "invalid_value", "blend"),
    (VoiceUnavailableError(VoiceNotFoundError("unknown voice 'x'", "voice")), 400, "voice_not_found", "voice"),
    (AudioTooLongError(30.0), 400, "audio_too_long", "file"),
    (AudioDecodeError("the file is empty"), 400, "invalid_audio", "file"),
    (AudioCodecError("the encoder is closed"), 500, "audio_codec_error", None),
    (EngineUnavailableError("endpoint down"), 503, "engine_unavailable", None),
    (EngineError("inference failed"), 500, "engine_error", None),
]


@pytest.mark.parametrize(("exc", "status", "code", "param"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_domain_error_has_one_mapping(exc: Exception, status: int, code: str, param: str | None) -> None:
    error = domain_error(exc)
    assert (error.status_code, error.code, error.param) == (status, code, param)
    assert error.kind == ("server_error" if status >= 500 else "invalid_request_error")
    assert str(exc) in error.message


def test_a_stream_that_started_reports_the_same_error_body() -> None:
    body = error_event_body(EngineUnavailableError("endpoint down"))
    assert body == {
        "error": {"message": "endpoint down", "type": "server_error", "param": None, "code": "engine_unavailable"}
    }
