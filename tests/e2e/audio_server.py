"""Servers for the speech, transcription and voice API tests: real models, a temp data dir.

``in_process_server`` runs uvicorn in the tests' event loop (as ``conftest.live_server``
does) from a config file; ``spawned_server`` runs ``cosyagent serve`` in a child process,
which is what a restart looks like.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from cosyagent.config import load_config
from cosyagent.runtime import Runtime
from tests.e2e.conftest import LiveServer, free_port, serve_in_process


def write_config(directory: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A config file whose data_dir is ``directory/data`` (plus ``sections``)."""
    raw: dict[str, dict[str, Any]] = {"server": {"data_dir": str(directory / "data")}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def in_process_server(config_file: Path) -> AsyncIterator[LiveServer]:
    runtime = Runtime.from_config(load_config(config_file, environ={}))
    async with serve_in_process(runtime, free_port()) as server:
        yield server


@contextlib.contextmanager
def spawned_server(
    config_file: Path, api_key: str | None = None, timeout_s: float = 180.0
) -> Iterator[tuple[str, Path]]:
    """``cosyagent serve --config FILE`` in a child process; yields (base URL, log file)."""
    port = free_port()
    log_path = config_file.with_name(f"serve-{port}.log")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("COSYAGENT_API_KEYS", None)
    command = [sys.executable, "-m", "cosyagent.cli", "serve", "--config", str(config_file), "--port", str(port)]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", headers=headers, timeout=2.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not healthy in {timeout_s} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield url, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
