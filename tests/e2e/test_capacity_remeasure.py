"""``cosyagent serve`` with ``server.capacity: auto`` measures the engines again once it is idle
(``server.capacity_remeasure_s``), as ``/v1/health`` and the log say: the product's own startup
path, in a child process, with the real embedded models."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.e2e.audio_server import spawned_server, write_config


def test_a_served_auto_capacity_is_measured_again_when_idle(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"server": {"capacity": "auto", "capacity_remeasure_s": 1}})
    with spawned_server(config) as (url, log):
        deadline = time.monotonic() + 90  # the watch looks every 5 s; a slow shared CPU measures slowly
        while True:
            capacity = httpx.get(f"{url}/health", timeout=10).json()["capacity"]
            if capacity["measurements"] >= 2:
                break
            assert time.monotonic() < deadline, f"not measured again: {capacity}"
            time.sleep(0.5)
        assert capacity["setting"] == "auto" and capacity["measured"] >= 1 and capacity["measured_at"]
        assert capacity["turn_cost_seconds"]["turn"] > 0
        assert "capacity measured again while idle" in log.read_text()
