"""The avatar page in a real Chromium (Debian's, driven by playwright-core) against the real server:
a call, a typed question, and the face while the agent answers with Piper's voice over WebRTC.

The driver samples, every 20 ms, the mouth's viseme and the level of the agent's audio as the page
plays it. In step means: the mouth is at rest before the reply and after it, moves through many
shapes while it plays, is open while the voice is loud, and opens and closes with the voice's
level (their correlation peaks at no shift), on loopback and with the jitter buffer holding the
voice half a second, as on a network farther away. The screenshot goes to
docs/screenshots/avatar.png (written when missing, refreshed with COSYAGENT_UPDATE_SCREENSHOTS=1).
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
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.browser.test_pages import ARTIFACTS, CHROMIUM, DOCS_SCREENSHOTS, PLAYWRIGHT, ROOT
from tests.e2e.conftest import LiveServer
from tests.e2e.webrtc_client import loopback_candidates

DRIVER = Path(__file__).resolve().parent / "drive_avatar.mjs"
LOUD_RMS = 0.03
SAMPLE_MS = 20  # the driver samples face and voice this often
SYNC_MS = 120  # how far the mouth may run ahead of or behind the voice
FAR_JITTER_MS = 500  # the receiver's jitter buffer target standing in for a far network


def lag_correlations(samples: list[dict[str, Any]], max_lag_ms: int = 300) -> dict[int, float]:
    """Pearson correlation of the mouth being open (not ``sil`` or closed lips) with the voice's
    level, with the mouth shifted by each lag in ms (positive: the mouth later than the voice)."""
    mouth = np.array([s["viseme"] not in ("sil", "PP") for s in samples], dtype=np.float64)
    voice = np.sqrt(np.array([s["rms"] for s in samples], dtype=np.float64))  # loudness, compressed
    correlations = {}
    for steps in range(-max_lag_ms // SAMPLE_MS, max_lag_ms // SAMPLE_MS + 1):
        shifted, level = (mouth[steps:], voice[: voice.size - steps]) if steps >= 0 else (mouth[:steps], voice[-steps:])
        correlations[steps * SAMPLE_MS] = float(np.corrcoef(shifted, level)[0, 1])
    return correlations


pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM.exists() and PLAYWRIGHT.exists() and shutil.which("node")),
        reason="needs /usr/bin/chromium, node and node_modules/playwright-core (make test installs them)",
    ),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module", autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_candidates():
        yield


async def drive(base_url: str, jitter_target_ms: int | None = None) -> dict[str, Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    silence = ARTIFACTS / "silence-16k.wav"  # the microphone says nothing: the question is typed
    sf.write(silence, np.zeros(16000 * 5, np.float32), 16000, subtype="PCM_16")
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        base_url,
        str(silence),
        str(ARTIFACTS),
        *([str(jitter_target_ms)] if jitter_target_ms else []),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=800)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    sys.stderr.write(stderr.decode(errors="replace"))
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    (ARTIFACTS / "avatar-result.json").write_text(json.dumps(result, indent=2))
    return result


@pytest.mark.parametrize("jitter_target_ms", [None, FAR_JITTER_MS], ids=["loopback", "far-network"])
async def test_the_mouth_follows_the_agents_voice(live_server: LiveServer, jitter_target_ms: int | None) -> None:
    result = await drive(f"http://127.0.0.1:{live_server.port}", jitter_target_ms)
    assert "failure" not in result, result.get("failure")
    assert result.get("jitterBufferTarget") == jitter_target_ms
    assert not result["pageErrors"], result["pageErrors"]
    assert result["title"] == "Avatar · cosyagent" and result["idleViseme"] == "sil"
    assert result["timestampEvents"] > 5

    log = result["log"]
    started = next(e["at"] for e in log if e["type"] == "output_audio_buffer.started")
    stopped = next(e["at"] for e in log if e["type"] == "output_audio_buffer.stopped")
    samples = result["samples"]
    before = [s for s in samples if s["at"] < started]
    during = [s for s in samples if started <= s["at"] <= stopped]
    after = [s for s in samples if s["at"] > stopped + 300]
    assert before and after and len(during) > 50
    assert {s["viseme"] for s in before} == {"sil"}  # at rest until the voice starts
    assert {s["viseme"] for s in after} == {"sil"}  # and again once it stops
    assert len({s["viseme"] for s in during}) >= 6  # it moves through many shapes
    changes = [c for c in result["changes"] if started <= c["at"] <= stopped]
    assert len(changes) >= 10
    # Open while the voice is loud; a face that ran ahead of or behind the audio would be at rest
    # through much of it.
    loud = [s for s in during if s["rms"] > LOUD_RMS]
    assert len(loud) > 20, "the agent's voice was not heard"
    open_when_loud = sum(s["viseme"] != "sil" for s in loud) / len(loud)
    assert open_when_loud >= 0.75, open_when_loud  # measured 97-100%
    # In step: the mouth's opening follows the voice's level most closely with no shift (within
    # SYNC_MS). The share of quiet frames with the mouth open cannot show it: visemes hold through
    # the short quiet stretches inside and between words (36-61% on an idle machine, in sync).
    around = [s for s in samples if started - 400 <= s["at"] <= stopped + 400]
    correlation = lag_correlations(around)
    best = max(correlation, key=lambda lag: correlation[lag])
    print(
        f"mouth open in {open_when_loud:.0%} of loud frames; mouth and voice correlate best at {best} ms"
        f" ({correlation[best]:.2f}; {correlation[-300]:.2f} and {correlation[300]:.2f} 300 ms off);"
        f" the jitter buffer held the voice {result['playoutDelayMs']:.0f} ms;"
        f" stalls moved the face's clock {[r['shift_ms'] for r in result['resyncs']]} ms"
    )
    # Measured with the face clocked from the voice's start and following the jitter buffer's
    # changes measured after it (2-core EPYC, nine runs, loopback and 300 or 500 ms jitter buffer
    # targets): best at -40..+40 ms, 0.40-0.60 there, -0.19..0.12 at 300 ms off. Following the
    # delay averaged over the second before the voice was heard put the face 200-220 ms behind
    # with a 500 ms target (two runs) and once 100 ms behind on loopback (a full make test).
    # Before that, one full make test had the face a constant 300 ms ahead, one solo run drifting
    # to 300 ms.
    assert abs(best) <= SYNC_MS, (correlation, result["resyncs"])
    assert correlation[best] >= 0.3, correlation
    assert correlation[0] >= max(correlation[-300], correlation[300]) + 0.2, correlation

    screenshot = ARTIFACTS / "avatar.png"
    assert screenshot.exists()
    if not (DOCS_SCREENSHOTS / "avatar.png").exists() or os.environ.get("COSYAGENT_UPDATE_SCREENSHOTS"):
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, DOCS_SCREENSHOTS / "avatar.png")
