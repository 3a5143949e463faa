"""``python -m benchmarks.phone`` end to end: it spawns a real server (real models) with the SIP
endpoint on 127.0.0.1, calls it once over Twilio's media stream and once over SIP with G.722
with a real spoken question, and has the server transcribe the 8 kHz phone clip as μ-law. Numbers
are only sanity-checked (speed is measured, not asserted). The WebSocket and SIP PCMU rows use
the same code paths as these two (and the bench's WebSocket driver has tests of its own); they
are left out to keep the suite's length, as are the two 16 kHz clips' transcripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_one_turn_per_transport_fills_every_row(tmp_path: Path) -> None:
    out = tmp_path / "phone.json"
    command = [sys.executable, "-m", "benchmarks.phone", "--turns", "1", "--transports", "twilio,sip-g722"]
    command += ["--wer-clips", "en_news_movement_8k.wav"]
    command += ["--out", str(out)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    table = done.stdout
    for row in ("| twilio | 1 ", "| sip-g722 | 1 "):
        assert row in table, table
    assert "| websocket |" not in table and "| sip-pcmu |" not in table, table
    assert "| en_news_movement_8k.wav | pcmu |" in table and "| en_news_movement_8k.wav | pcm24 |" in table, table
    assert "en_dublin_q.wav" not in table, table
    report = json.loads(out.read_text())
    for transport, row in report["summary"].items():
        assert row["errors"] == 0, (transport, report["turns"])
        assert 0 < row["voice_to_voice_ms"]["p50"] < 60_000, (transport, row)
    negotiated = {t["transport"]: t.get("negotiated") for t in report["turns"]}
    assert negotiated["sip-g722"] == "G722/8000"
    for turn in report["turns"]:
        if turn["transport"].startswith("sip-"):
            # G.722 too: an 8000/s RTP clock (RFC 3551 4.5.2), 160 ticks and 160 bytes per 20 ms
            assert (turn["rtp_timestamp_steps"], turn["rtp_payload_bytes"]) == ([160], [160]), turn
    # The server understood the 8 kHz phone clip (a generous bound: its real WER is 18-41%, by recognizer).
    (news,) = [w for w in report["wer"] if w["clip"] == "en_news_movement_8k.wav" and w["codec"] == "pcmu"]
    assert news["wer"] < 0.5, news
