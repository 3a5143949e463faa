"""`cosyagent bench` end to end: the real CLI spawns a real server (real models) on a free port,
one session speaks real recorded utterances to it in real time, and the run leaves its table,
JSON and plots behind. Numbers are only sanity-checked (speed is measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_one_websocket_session_with_a_barge_in(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cosyagent.cli", "bench", "--sessions", "1", "--targets", "websocket"]
    command += ["--turns", "1", "--barge-ins", "1", "--results", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "v2v p50" in done.stdout and "single session voice-to-voice p50" in done.stdout

    (report_path,) = tmp_path.glob("bench-*.json")
    report = json.loads(report_path.read_text())
    (run,) = report["runs"]
    assert (run["target"], run["sessions"], run["turns_ok"], run["turns_failed"]) == ("websocket", 1, 1, 0)
    assert not run["errors"]  # a microphone up to 0.25 s late is only a note (benchmarks/records.py)
    assert run["records"][0]["mic_lag_ms"] >= 0
    summary = run["summary_ms"]
    for metric in ("voice_to_voice_ms", "end_of_turn_ms", "asr_ms", "llm_first_token_ms", "tts_first_audio_ms"):
        assert 0 < summary[metric]["p50"] < 20_000, (metric, summary[metric])
    # The stages happen in order within one turn.
    for turn in run["records"][0]["turns"]:
        assert turn["llm_first_token_ms"] <= turn["first_clause_ms"] <= turn["tts_first_audio_ms"]
        assert turn["end_of_turn_ms"] < turn["voice_to_voice_ms"]
        assert 0 <= turn["reply_stall_ms"] < turn["reply_audio_s"] * 1000  # one session: measured, not all silence
    (trial,) = run["records"][0]["barge_ins"]
    if "skipped" not in trial:  # a reply shorter than 0.5 s cannot be interrupted
        assert trial["response_status"] == "cancelled"
        assert 0 < trial["barge_in_stop_ms"] < 5_000
        assert 0 < trial["barge_in_voice_stop_ms"] <= trial["barge_in_stop_ms"]
        assert trial["deltas_after_response_done"] == 0
    assert run["server_cpu"]["server_cores"] > 0 and run["server_memory"]["peak_mib"] > 100
    assert 100 < report["machine"]["speed"]["moonshine_ms"] < 60_000  # measured before the server started
    assert f"the machine's speed: {report['machine']['speed']['moonshine_ms']} ms (Moonshine" in done.stdout
    for kind in ("cdf", "stages", "sessions"):
        picture = report_path.with_name(f"{report_path.stem}-{kind}.png")
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000


def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path) -> None:
    for bad in (["--sessions", "0"], ["--sessions", "two"], ["--targets", "livekit"]):
        done = subprocess.run(
            [sys.executable, "-m", "cosyagent.cli", "bench", *bad], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 2 and "cosyagent bench: error" in done.stderr, done.stderr
