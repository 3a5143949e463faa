"""`cosyagent serve` as a user starts it: `--version`, a busy port, and PORT/HOST in the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cosyagent import __version__
from tests.e2e.conftest import free_port

COSYAGENT = str(Path(sys.executable).with_name("cosyagent"))


def test_version() -> None:
    done = subprocess.run([COSYAGENT, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == f"cosyagent {__version__}"


def test_a_busy_port_is_reported_before_any_model_loads() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [COSYAGENT, "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 2, done.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "--port" in done.stderr
    assert "loaded" not in done.stderr and "engines ready" not in done.stderr  # it said so before loading anything


def test_port_and_host_in_the_environment_do_not_reach_the_embedded_llm(tmp_path: Path) -> None:
    """`PORT=N make serve`: make exports PORT to cosyagent, which must not pass it on to the llama.cpp child."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [COSYAGENT, "serve", "--port", str(port), "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            health = None
            deadline = time.monotonic() + 90.0
            while time.monotonic() < deadline and server.poll() is None and health is None:
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1.0)
                    health = answer.json() if answer.status_code == 200 else None
                except httpx.HTTPError:
                    time.sleep(0.3)
            assert health is not None, (tmp_path / "serve.log").read_text()
            assert health["engines"]["llm"]["loaded"]
            assert not health["engines"]["llm"]["base_url"].endswith(f":{port}/v1")
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_a_busy_sip_port_is_reported_before_any_model_loads() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        sip_port = taken.getsockname()[1]
        done = subprocess.run(
            [COSYAGENT, "serve", "--port", str(free_port()), "--sip-port", str(sip_port)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
    assert done.returncode == 2, done.stderr
    assert f"SIP port {sip_port} (udp) on 127.0.0.1 is already in use" in done.stderr
    assert "--sip-port" in done.stderr
    assert "engines ready" not in done.stderr
