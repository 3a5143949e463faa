"""The bench's callers stand in for phones and browsers on other machines: on the machine under
test they run below the server's CPU priority (benchmarks/harness.py, ``below_the_server``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from benchmarks import harness

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_the_callers_run_below_the_server_and_a_server_spawned_after_keeps_its_priority() -> None:
    before = niceness()

    def callers() -> tuple[int, int]:
        started: list[int] = []
        helper = threading.Thread(target=lambda: started.append(niceness()))  # an aiortc decoder, say
        helper.start()
        helper.join()
        return niceness(), started[0]

    own, helper = harness.below_the_server(callers)
    assert own == helper == min(19, before + harness.CALLER_NICE)
    assert niceness() == before
    spawned = subprocess.run(["sh", "-c", "cut -d' ' -f19 /proc/self/stat"], capture_output=True, text=True, check=True)
    assert int(spawned.stdout) == before  # the next server the bench starts


def test_what_the_callers_raise_reaches_the_bench() -> None:
    def callers() -> None:
        raise ConnectionRefusedError("no server")

    with pytest.raises(ConnectionRefusedError, match="no server"):
        harness.below_the_server(callers)
