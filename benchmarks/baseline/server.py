"""The stock pipecat baseline as a child process: ``benchmarks/baseline/pipecat_bot.py`` on a free
port, its llama.cpp server reaped with it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.baseline import spawn_child
from benchmarks.harness import PORTS, free_port, stop_process, wait_healthy
from benchmarks.records import ROOT

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def spawned_baseline(timeout_s: float = 180.0, ports: range = PORTS) -> Iterator[tuple[str, int]]:
    """Run ``python -m benchmarks.baseline.pipecat_bot`` on a free port; yields (URL, pid). It and
    its llama.cpp server are stopped afterwards (and die with this process in any case)."""
    port = free_port(ports)
    log = tempfile.NamedTemporaryFile(prefix=f"baseline-bot-{port}-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "benchmarks.baseline.pipecat_bot", "--port", str(port)]
    process = spawn_child(command, log, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    llm_pid: int | None = None
    logger.info("started the pipecat baseline pid %d on port %d (log %s)", process.pid, port, log.name)
    try:
        llm_pid = wait_healthy(url, process, timeout_s).get("llm_pid")
        yield url, process.pid
    except BaseException:
        log.flush()
        logger.error("baseline log tail:\n%s", Path(log.name).read_text(errors="replace")[-3000:])
        raise
    finally:
        stop_process(process)
        if llm_pid is not None:
            _reap_orphan(llm_pid)
        log.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def _reap_orphan(pid: int, timeout_s: float = 10.0) -> None:
    """The llama.cpp server gets SIGTERM when the bot dies; make sure it is gone."""
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        logger.warning("the baseline's llama.cpp server pid %d outlived it; killing it", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
