"""Shared benchmark plumbing: a server to measure, the machine it ran on, percentiles."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

logger = logging.getLogger(__name__)

PORTS = range(8300, 8400)  # where benchmark and test servers go on a shared machine


def free_port(ports: range = PORTS) -> int:
    """A port in ``ports`` that nothing listens on now (random order: less racing with others)."""
    candidates = list(ports)
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{url}/health", timeout=2.0)
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
        time.sleep(0.25)
    raise RuntimeError(f"the server at {url} was not healthy within {timeout_s:g} s")


@contextlib.contextmanager
def spawned_server(timeout_s: float = 180.0) -> Iterator[str]:
    """Run ``cosyagent serve`` on a free port; yields its base URL; stops it afterwards."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"cosyagent-serve-{port}-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "cosyagent.cli", "serve", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    logger.info("started server pid %d on port %d (log %s)", process.pid, port, log.name)
    try:
        wait_healthy(url, process, timeout_s)
        yield url
    except BaseException:
        log.flush()
        tail = Path(log.name).read_text(errors="replace")[-3000:]
        logger.error("server log tail:\n%s", tail)
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def server_health(url: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = httpx.get(f"{url}/health", timeout=5.0).json()
        return body
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": str(exc)}


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        memory_gib = round(int(next(m for m in meminfo if m.startswith("MemTotal")).split()[1]) / 2**20, 1)
    return {
        "cpu_model": cpu_model or platform.processor(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "busiest_processes": busiest_processes(),
    }


def busiest_processes(count: int = 5) -> list[str]:
    """The processes using the most CPU: other work on a shared machine skews latency."""
    try:
        listing = subprocess.run(
            ["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=5, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip()[:160] for line in listing.splitlines()[1 : count + 1]]


def summarize(values: list[float]) -> dict[str, float]:
    data = np.asarray(values, dtype=np.float64)
    return {
        "n": float(data.size),
        "p50": round(float(np.percentile(data, 50)), 1),
        "p95": round(float(np.percentile(data, 95)), 1),
        "min": round(float(data.min()), 1),
        "max": round(float(data.max()), 1),
        "mean": round(float(data.mean()), 1),
    }
