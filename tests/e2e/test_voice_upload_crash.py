"""kill -9 of `cosyagent serve` (a real child process) while it writes an uploaded voice: after a
restart no half-written voice is listed, every listed voice is whole, and no temporary file
is left (neither the store's ``.tmp-*`` staging nor the upload spooled under ``TMPDIR``).

A watcher thread scans the voice directory and kills the server the moment a staging
directory appears, so the kill lands inside the store's write, not before or after it.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import soundfile as sf

from tests.e2e.audio_server import write_config
from tests.e2e.conftest import free_port
from tests.support import DATA, REFERENCES

WORKTREE = Path(__file__).resolve().parents[2]
CLIP = "en_philosophy_22s.wav"  # the longest clip: the longest write
MAX_UPLOADS = 20


@contextlib.contextmanager
def serve(config: Path, tmpdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(WORKTREE), "TMPDIR": str(tmpdir)}
    env.pop("COSYAGENT_API_KEYS", None)
    command = [sys.executable, "-m", "cosyagent.cli", "serve", "--config", str(config), "--port", str(port)]
    log_path = config.with_name(f"serve-{port}.log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def staging_entries(voices: Path) -> list[str]:
    """The store's temporary names under ``voices`` (staging directories, feature temp files)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(voices):
            if entry.name.startswith((".tmp-", ".trash-")):
                found.append(entry.name)
            elif entry.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    found += [f"{entry.name}/features/{n}" for n in os.listdir(Path(entry.path) / "features")]
    return [name for name in found if "/features/" not in name or Path(name).name.startswith(".tmp-")]


def kill_on_staging(process: subprocess.Popen[bytes], voices: Path, stop: threading.Event, seen: list[str]) -> None:
    """Scan until a staging entry appears, then SIGKILL the server at once."""
    deadline = time.monotonic() + 600
    while not stop.is_set() and time.monotonic() < deadline and process.poll() is None:
        entries = staging_entries(voices)
        if entries:
            process.send_signal(signal.SIGKILL)
            seen.extend(entries)
            return


def test_a_kill_during_a_voice_write_leaves_no_partial_voice_and_no_temp_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"llm": {"embedded_model": "smollm2"}, "server": {"capacity": 1}})
    voices = tmp_path / "data" / "voices"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    clip = (DATA / CLIP).read_bytes()
    created: set[str] = set()
    seen: list[str] = []
    with serve(config, tmpdir) as (process, url):
        at_start = set(tmpdir.iterdir())  # what the libraries keep there (a session-id file)
        stop = threading.Event()
        watcher = threading.Thread(target=kill_on_staging, args=(process, voices, stop, seen), daemon=True)
        watcher.start()
        try:
            for upload in range(MAX_UPLOADS):
                fields = {"name": f"Voice {upload}", "text": REFERENCES[CLIP]}
                try:
                    answer = httpx.post(f"{url}/voices", files={"file": (CLIP, clip)}, data=fields, timeout=60)
                except httpx.TransportError:
                    break  # killed under this upload
                assert answer.status_code == 201, answer.text
                created.add(answer.json()["id"])
        finally:
            stop.set()
            watcher.join(timeout=10)
        assert process.wait(timeout=30) == -signal.SIGKILL, f"no write caught in {MAX_UPLOADS} uploads"
    assert seen and any(name.startswith(".tmp-") for name in seen), seen  # the kill landed mid-write
    left = staging_entries(voices)  # (empty only if the rename beat the kill by microseconds)

    with serve(config, tmpdir) as (_, url):
        listed = {v["id"]: v for v in httpx.get(f"{url}/voices", timeout=10).json()["data"] if v["type"] != "builtin"}
        assert created <= set(listed)
        assert len(set(listed) - created) <= 1  # at most the one whose write finished just before the kill
        for voice_id, voice in listed.items():  # each whole: its metadata and its clip
            assert voice["text"] == REFERENCES[CLIP]
            wav = httpx.get(f"{url}/voices/{voice_id}/audio", timeout=10)
            assert wav.status_code == 200
            assert abs(sf.info(io.BytesIO(wav.content)).duration - voice["duration_s"]) < 0.05
    assert staging_entries(voices) == []  # recovered at start
    if left:
        log = "".join(path.read_text() for path in tmp_path.glob("serve-*.log"))
        assert f"removed {len(left)} leftover(s) of interrupted writes" in log, log[-3000:]
    assert set(tmpdir.iterdir()) == at_start  # no spooled upload left behind
