"""Seeded fuzzing of the Realtime client events over a real socket (official openai SDK).

Valid client events are mutated at random (a field dropped, a value swapped for junk of
another type, the type swapped, unknown keys, non-object JSON, cut-off text) and sent at a
pace under the event budget. The session must answer every refusal with a precise ``error``
event, stay usable throughout (a ``session.update`` round trip every 50 events), and the
server must log no unhandled exception. Bounded: 300 events, a fixed seed, ~2 minutes.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import random
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.e2e.conftest import LiveServer

SEED = 20261201
EVENTS = 300
PACE_S = 1 / 40  # under realtime.max_events_per_second (100)

_AUDIO = base64.b64encode(bytes(960)).decode()  # 20 ms of pcm16 silence at 24 kHz
VALID: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "Answer in one word."}},
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}},
        },
    },
    {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 8}},
    {"type": "input_audio_buffer.append", "audio": _AUDIO},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi."}]},
    },
    {"type": "conversation.item.delete", "item_id": "item_missing"},
    {"type": "conversation.item.truncate", "item_id": "item_missing", "content_index": 0, "audio_end_ms": 10},
    {"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 4}},
    {"type": "response.cancel"},
]
JUNK: list[Any] = [None, -1, 0, 1e308, "", "x" * 5000, [], {}, [1, "a"], {"a": {"b": [None]}}, True, "\u0000\u2603"]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path inside ``node`` (dicts and lists), ``type`` at the top excluded."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        if prefix == () and key == "type":
            continue
        found.append((*prefix, key))
        found += _paths(value, (*prefix, key))
    return found


def _set(node: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> None:
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


def mutate(rng: random.Random) -> str:
    """One fuzzed client message (text as sent on the socket)."""
    event = copy.deepcopy(rng.choice(VALID))
    paths = _paths(event)
    operation = rng.randrange(7)
    if operation == 0 and paths:
        _set(event, rng.choice(paths), None, delete=True)
    elif operation in (1, 2) and paths:
        _set(event, rng.choice(paths), copy.deepcopy(rng.choice(JUNK)))
    elif operation == 3:
        event["type"] = rng.choice([e["type"] for e in VALID] + ["session.dance", "", 7, None, ["response.create"]])
    elif operation == 4:
        event[rng.choice(["extra", "session_x", "event_id", "\u2603"])] = copy.deepcopy(rng.choice(JUNK))
    elif operation == 5:
        return json.dumps(rng.choice([[event], 42, "response.create", None, [[[[]]]]]))
    else:
        text = json.dumps(event)
        return text[: rng.randrange(1, len(text))]
    return json.dumps(event)


async def test_fuzzed_client_events_get_precise_errors_and_the_session_survives(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(SEED)
    errors: list[Any] = []
    pings_seen: set[str] = set()
    caplog.set_level(logging.ERROR)
    client = AsyncOpenAI(base_url=live_server.base_url, api_key="test-key")
    async with client.realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 8})

        async def read() -> None:
            async for event in conn:
                if event.type == "error":
                    errors.append(event.error)
                elif event.type == "session.updated" and (event.session.instructions or "").startswith("ping "):
                    pings_seen.add(event.session.instructions)

        reader = asyncio.create_task(read())
        try:
            for sent in range(1, EVENTS + 1):
                await conn.send_raw(mutate(rng))
                await asyncio.sleep(PACE_S)
                if sent % 50 == 0:  # still usable: a session.update round trip
                    ping = f"ping {sent}"
                    await conn.session.update(session={"type": "realtime", "instructions": ping})
                    async with asyncio.timeout(30):
                        while ping not in pings_seen:
                            assert not reader.done(), "the session ended during the fuzzing"
                            await asyncio.sleep(0.05)
            await conn.response.cancel()  # whatever a fuzzed response.create started
            await asyncio.sleep(0.5)
        finally:
            reader.cancel()

    assert len(pings_seen) == EVENTS // 50
    assert len(errors) >= EVENTS // 3, f"only {len(errors)} refusals: the fuzzing did not reach the checks"
    vague = [e for e in errors if not (e.code and e.message and e.type)]
    assert not vague, vague[:5]
    assert {e.type for e in errors} <= {"invalid_request_error", "server_error"}
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage()[:300] for r in crashes[:5]]
