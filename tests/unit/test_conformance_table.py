"""The README's Realtime conformance table names every GA event type of openai-python, once."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conformance import CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| (client|server) \| (yes|no|WebRTC|phone sideband) \|", re.MULTILINE)


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


# Server event types the code builds from parts (f"output_audio_buffer.{kind}"), not as one literal.
BUILT_FROM_PARTS = {"output_audio_buffer.started", "output_audio_buffer.stopped"}


def test_the_table_says_yes_exactly_for_the_server_events_the_code_sends() -> None:
    """A server event marked "no" is never named in cosyagent's code (so it cannot be sent), and
    one marked served is: the table cannot fall behind a feature, or claim one that is gone."""
    source = "\n".join(path.read_text(encoding="utf-8") for path in (README.parent / "cosyagent").rglob("*.py"))
    rows = ROW.findall(README.read_text(encoding="utf-8"))
    wrong = [
        (name, here)
        for name, side, here in rows
        if side == "server" and (here != "no") != (f'"{name}"' in source or name in BUILT_FROM_PARTS)
    ]
    assert not wrong, f"README rows that disagree with the code: {wrong}"
    served = {name for name, side, here in rows if here != "no"}
    assert {"input_audio_buffer.timeout_triggered", "conversation.item.create", "response.create"} <= served
