"""`cosyagent talk` end to end: the real command against a real `cosyagent serve` subprocess,
speaking a real recorded question (tests/data/en_dublin_q.wav)."""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import soundfile as sf

DATA = Path(__file__).resolve().parent.parent / "data"
SHARED_AUDIO = Path("/work/shared/audio")
COSYAGENT = str(Path(sys.executable).with_name("cosyagent"))
# Short replies keep the test fast: reply audio is paced to real time.
CONFIG = """\
realtime:
  instructions: You are a friendly voice assistant. Answer in one short sentence.
  max_output_tokens: 40
"""


def _free_port() -> int:
    """A free port, from 8300-8399 when one is (the range kept for test servers here)."""
    ports = list(range(8300, 8400))
    random.shuffle(ports)
    for port in [*ports, 0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def dublin_wav() -> Path:
    path = DATA / "en_dublin_q.wav"
    if not path.exists():
        shutil.copyfile(SHARED_AUDIO / path.name, path)
    return path


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("serve")
    config = folder / "config.yaml"
    config.write_text(CONFIG)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with (folder / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [COSYAGENT, "serve", "--port", str(port), "--config", str(config), "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 45.0
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                pytest.fail(f"server did not become healthy:\n{(folder / 'serve.log').read_text()[-2000:]}")
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _talk(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COSYAGENT, "talk", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_talk_speaks_a_real_question_and_saves_the_reply(server_url: str, dublin_wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    done = _talk(str(dublin_wav), "--url", server_url, "--out", str(out), "--timeout", "30", timeout=45)

    assert done.returncode == 0, done.stderr
    heard = [line for line in done.stdout.splitlines() if line.startswith("you said:")]
    assert any("dublin" in line.lower() for line in heard), done.stdout
    info = sf.info(str(out))
    assert info.samplerate == 24000 and info.channels == 1
    assert info.duration > 0.5, done.stdout
    match = re.search(r"^voice-to-voice: (\d+) ms", done.stdout, re.MULTILINE)
    assert match is not None, done.stdout
    assert 0 < int(match.group(1)) < 30_000


def test_talk_to_a_closed_port_fails_clearly(dublin_wav: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    done = _talk(str(dublin_wav), "--url", url, "--out", str(tmp_path / "reply.wav"), "--timeout", "10", timeout=30)

    assert done.returncode != 0
    assert "cannot reach" in done.stderr and url in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "reply.wav").exists()
