"""The README's Realtime conformance table names every GA event type of openai-python, once."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conformance import CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| (client|server) \| (yes|no|WebRTC|SIP sideband) \|", re.MULTILINE)


def test_every_sdk_event_type_has_one_row() -> None:
    rows = ROW.findall(README.read_text(encoding="utf-8"))
    listed = [(name, side) for name, side, _ in rows]
    expected = [(name, "client") for name in CLIENT_EVENT_TYPES] + [(name, "server") for name in SERVER_EVENT_TYPES]
    assert len(listed) == len(set(listed)), "an event is listed twice"
    assert sorted(listed) == sorted(expected)


def test_the_checker_rejects_what_the_sdk_rejects() -> None:
    from tests.e2e.conformance import mismatches

    good = {"type": "input_audio_buffer.cleared", "event_id": "event_1"}
    missing_field = {"type": "input_audio_buffer.committed", "event_id": "event_2"}  # no item_id
    wrong_literal = {
        "type": "response.done",
        "event_id": "event_3",
        "response": {"id": "resp_1", "object": "realtime.response", "status": "finished"},
    }
    unknown = {"type": "response.output_audio.started", "event_id": "event_4"}
    problems = mismatches([good, missing_field, wrong_literal, unknown])
    assert [p.split(":")[0] for p in problems] == [
        "input_audio_buffer.committed",
        "response.done",
        "response.output_audio.started",
    ]
