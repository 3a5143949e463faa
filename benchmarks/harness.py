"""Shared benchmark plumbing: a server to measure, the machine it ran on, percentiles."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
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
def spawned_server(
    timeout_s: float = 180.0, extra_args: Sequence[str] = (), ports: range = PORTS
) -> Iterator[tuple[str, int]]:
    """Run ``cosyagent serve [extra_args]`` on a free port; yields (base URL, pid); stops it afterwards."""
    port = free_port(ports)
    log = tempfile.NamedTemporaryFile(prefix=f"cosyagent-serve-{port}-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "cosyagent.cli", "serve", *extra_args]
    command += ["--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    logger.info("started server pid %d on port %d (log %s)", process.pid, port, log.name)
    try:
        wait_healthy(url, process, timeout_s)
        yield url, process.pid
    except BaseException:
        log.flush()
        tail = Path(log.name).read_text(errors="replace")[-3000:]
        logger.error("server log tail:\n%s", tail)
        raise
    finally:
        stop_process(process)
        log.close()


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``; always reaped."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def server_health(url: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = httpx.get(f"{url}/health", timeout=5.0).json()
        return body
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": str(exc)}


def server_code() -> dict[str, Any]:
    """Which source tree a server spawned from here runs, and its commit: ``python -m`` puts the
    working directory first on the path, so from a checkout that checkout's code is imported
    whatever PYTHONPATH says (an A/B against a worktree must run from inside it)."""
    where = subprocess.run(
        [sys.executable, "-c", "import cosyagent, pathlib; print(pathlib.Path(cosyagent.__file__).parent.parent)"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    source = where.stdout.strip() or None
    commit: str | None = None
    modified: bool | None = None
    if source is not None and shutil.which("git"):
        head = subprocess.run(
            ["git", "-C", source, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
        if head.returncode == 0:
            commit = head.stdout.strip()
            status = ["git", "-C", source, "status", "--porcelain", "--untracked-files=no", "--", "cosyagent"]
            modified = bool(subprocess.run(status, capture_output=True, text=True, check=False).stdout.strip())
    return {"source": source, "commit": commit, "modified": modified}


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
    }


# --- CPU accounting: on a shared 2-core machine, other work skews every latency -------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # guest time is already counted in user
    idle = fields[3] + fields[4]  # idle + iowait
    return (total - idle) / _TICK, total / _TICK


def _process_cpu() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds, command) for every process we can read."""
    table: dict[int, tuple[int, float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            rest = stat[stat.rindex(")") + 2 :].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            table[int(entry.name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICK, command[:120])
    return table


def _tree(table: dict[int, tuple[int, float, str]], root: int) -> set[int]:
    pids, grew = {root}, True
    while grew:
        children = {pid for pid, (parent, _, _) in table.items() if parent in pids} - pids
        pids |= children
        grew = bool(children)
    return pids & set(table)


class CpuMeter:
    """Busy cores over an interval: the whole machine, the server's process tree, this client,
    and everything else; plus the processes that used the most CPU meanwhile."""

    def __init__(self, server_pid: int | None) -> None:
        self._server_pid = server_pid
        self._wall = time.monotonic()
        self._machine = _machine_busy_s()
        self._processes = _process_cpu()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._wall
        busy, _ = _machine_busy_s()
        after = _process_cpu()
        used = {pid: cpu - self._processes.get(pid, (0, 0.0, ""))[1] for pid, (_, cpu, _) in after.items()}
        server = sum(used[p] for p in _tree(after, self._server_pid)) if self._server_pid else None
        client = used.get(os.getpid(), 0.0)
        machine = busy - self._machine[0]
        top = sorted(used, key=lambda pid: used[pid], reverse=True)[:5]
        return {
            "seconds": round(wall, 1),
            "machine_busy_cores": round(machine / wall, 2),
            "server_cores": None if server is None else round(server / wall, 2),
            "client_cores": round(client / wall, 2),
            "other_cores": None if server is None else round(max(0.0, machine - server - client) / wall, 2),
            "busiest": [f"{used[pid] / wall:.2f} cores  pid {pid}  {after[pid][2]}" for pid in top],
        }


class MemorySampler:
    """Resident memory of a process tree, sampled every ``every_s`` in a thread: peak and mean MiB."""

    def __init__(self, root_pid: int | None, every_s: float = 0.5) -> None:
        self._root = root_pid
        self._every = every_s
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        if root_pid is not None:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._samples.append(tree_rss_mib(self._root))

    def stop(self) -> dict[str, float | None]:
        if self._root is None:
            return {"peak_mib": None, "mean_mib": None}
        self._stop.set()
        self._thread.join()
        samples = self._samples or [tree_rss_mib(self._root)]
        return {"peak_mib": round(max(samples), 1), "mean_mib": round(sum(samples) / len(samples), 1)}


def tree_rss_mib(root_pid: int | None) -> float:
    """Resident memory of ``root_pid`` and its descendants (shared pages counted once per process)."""
    if root_pid is None:
        return 0.0
    total_kib = 0
    for pid in _tree(_process_cpu(), root_pid):
        with contextlib.suppress(OSError, ValueError, StopIteration):
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            total_kib += int(next(line for line in lines if line.startswith("VmRSS:")).split()[1])
    return total_kib / 1024


def wait_until_quiet(max_wait_s: float, busy_cores: float = 0.3, window_s: float = 2.0) -> list[float]:
    """Wait (up to ``max_wait_s``) for a ``window_s`` in which the machine uses under ``busy_cores``;
    returns the busy cores seen in each window."""
    seen: list[float] = []
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        before = _machine_busy_s()[0]
        time.sleep(window_s)
        seen.append(round((_machine_busy_s()[0] - before) / window_s, 2))
        if seen[-1] < busy_cores:
            break
    return seen


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


def result_path(folder: Path, name: str, started: dt.datetime) -> Path:
    """``folder/NAME-DATE.json``, or ``NAME-DATE-2.json``... when that exists: runs never overwrite."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{started:%Y-%m-%d}.json"
    n = 2
    while path.exists():
        path = folder / f"{name}-{started:%Y-%m-%d}-{n}.json"
        n += 1
    return path


def write_result(path: Path, report: dict[str, Any]) -> None:
    """A result file as every benchmark writes it: indented UTF-8 JSON."""
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
