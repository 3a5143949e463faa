"""The browser client in a real Chromium: Debian's /usr/bin/chromium driven by playwright-core.

The fake microphone plays a real-speech clip padded with digital silence (so that the
server's VAD sees the turn end), on a loop. Screenshots land in tests/browser/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.e2e.conftest import LiveServer
from tests.e2e.webrtc_client import dublin_question, loopback_candidates
from tests.support import word_error_rate

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DRIVER = Path(__file__).resolve().parent / "drive_pages.mjs"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PLAYWRIGHT = ROOT / "node_modules" / "playwright-core"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
README_SCREENSHOTS = ("voice-chat.png", "voice-chat-dark-zh.png", "tts.png")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and PLAYWRIGHT.exists() and shutil.which("node")),
    reason="needs /usr/bin/chromium, node and node_modules/playwright-core (make test installs them)",
)


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    """The server offers 127.0.0.1 only, and Chromium is allowed loopback candidates: the
    call works on any machine, whatever its network interfaces."""
    with loopback_candidates():
        yield


def fake_microphone() -> Path:
    """The real question padded with digital silence: 2 s before (the call connects meanwhile), 25 s
    after (the reply plays before Chromium loops the file and the user speaks again)."""
    speech = dublin_question(16000)
    audio = np.concatenate([np.zeros(2 * 16000, np.float32), speech, np.zeros(25 * 16000, np.float32)])
    path = ARTIFACTS / "fake-mic-en_dublin_q-padded-with-silence.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


async def drive(base_url: str, microphone: Path) -> dict[str, object]:
    """Run the driver in its own process group, so that a timeout also ends its Chromium."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        base_url,
        str(microphone),
        str(ARTIFACTS),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=400)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    sys.stderr.write(stderr.decode(errors="replace"))
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    result: dict[str, object] = json.loads(stdout.decode().strip().splitlines()[-1])
    (ARTIFACTS / "result.json").write_text(json.dumps(result, indent=2))
    return result


async def test_voice_chat_and_tts_pages_in_chromium_with_real_speech_padded_with_silence(
    live_server: LiveServer,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    result = await drive(f"http://127.0.0.1:{live_server.port}", fake_microphone())
    assert not result["pageErrors"], result["pageErrors"]
    chat, errors, tts = result["chat"], result["errors"], result["tts"]
    assert isinstance(chat, dict) and isinstance(errors, dict) and isinstance(tts, dict)
    for step in (chat, errors, tts):
        assert "failure" not in step, step.get("failure")

    # Voice chat: the user's words on the page, the agent's voice received and heard.
    assert "jf_alpha" in chat["voices"]
    assert word_error_rate("how do I get to Dublin", chat["userTranscript"]) <= 0.5, chat["userTranscript"]
    assert chat["inboundAudioBytes"] > 5000
    assert chat["agentPeak"] > 0.02
    assert chat["latencies"] and 0 < chat["latencies"][0] < 30000
    assert chat["latencyText"].endswith(("ms", "s"))
    assert chat["agentText"].strip()
    assert chat["chineseStatus"] in ("正在聆听", "你正在说话", "思考中…", "助手正在说话")
    assert chat["chineseButton"] == "结束通话"
    await _wait_for(lambda: live_server.runtime.active_sessions == 0)  # ending the call freed it

    # Error states: clear messages, and the page is ready to try again.
    assert errors["micDenied"]["key"] == "err.mic-denied"
    assert "denied" in errors["micDenied"]["text"]
    assert errors["unreachable"]["key"] == "err.unreachable"
    assert errors["callLimit"]["key"] == "err.call-limit"
    assert all(case["phase"] == "error" for case in errors.values())

    # TTS playground: streamed, timed, downloadable.
    assert tts["firstPacketText"].endswith(" ms")
    assert 0 < tts["firstPacketMs"] <= tts["totalMs"]
    assert tts["playing"]
    assert tts["suggestedFilename"] == "speech.wav"
    audio, rate = sf.read(tts["download"], dtype="float32")
    assert rate == 24000 and audio.ndim == 1
    assert abs(audio.size / rate - tts["audioSeconds"]) < 0.05
    assert audio.size / rate > 2.0 and float(np.sqrt(np.mean(audio**2))) > 0.01

    # The README's screenshots: written when missing, refreshed with COSYAGENT_UPDATE_SCREENSHOTS=1.
    for name in README_SCREENSHOTS:
        if not (DOCS_SCREENSHOTS / name).exists() or os.environ.get("COSYAGENT_UPDATE_SCREENSHOTS"):
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ARTIFACTS / name, DOCS_SCREENSHOTS / name)


async def _wait_for(condition: object, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)
