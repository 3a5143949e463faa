"""Speech first-byte latency and real-time factor, and transcription latency, measured at the client.

    .venv/bin/python benchmarks/speech_latency.py --spawn [--runs 5] [--quiet-wait 120]
    .venv/bin/python benchmarks/speech_latency.py --url http://127.0.0.1:8188/v1 [--api-key KEY]

Speech: ``POST /v1/audio/speech`` (streamed, ``response_format`` pcm by default) for inputs of
4, 10, 30, 50, 80 and 120 characters, the lengths of the table published for the CosyVoice
All-in-One Docker image (first packet 1.2-1.35 s, RTF 0.72-0.82 on an NVIDIA L40S). First
byte: from sending the request to the first body byte. RTF: the whole response time over
the seconds of audio it carried. Each input is spoken once first (not counted) and then
``--runs`` times. Transcription: ``POST /v1/audio/transcriptions`` on the real recordings
of ``tests/data`` (2.8-60 s), as WAV; latency per second of audio is the response time
over the clip's duration. Results: a table on stdout and JSON in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import soundfile as sf

from benchmarks import harness
from benchmarks.harness import (
    CpuMeter,
    machine_info,
    server_health,
    summarize,
    wait_until_quiet,
)

logger = logging.getLogger("speech_latency")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
PORTS = range(8400, 8500)
TEXTS = {  # exactly 4, 10, 30, 50, 80 and 120 characters
    4: "Yes.",
    10: "Thank you.",
    30: "The meeting starts at ten a.m.",
    50: "Please turn left at the next corner, then walk on.",
    80: "Your order has shipped and should arrive on Thursday, between noon and four p.m.",
    120: (
        "Good morning. The next train to the city leaves from platform four in ten minutes, "
        "so please have your ticket all ready."
    ),
}
CLIPS = (
    "en_dublin_q.wav",
    "en_wealth_tax_q.wav",
    "en_news_movement_8k.wav",
    "en_philosophy_22s.wav",
    "en_lecture_60s.wav",
)
PCM_BYTES_PER_S = 24_000 * 2
COSYVOICE_L40S = {"first_packet_s": "1.2-1.35", "rtf": "0.72-0.82"}  # the published table


@contextlib.contextmanager
def spawned_server(timeout_s: float = 180.0) -> Iterator[tuple[str, int]]:
    """``cosyagent serve`` with a throwaway data directory; yields (URL, pid)."""
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(f"server:\n  data_dir: {folder}/data\n")
        with harness.spawned_server(timeout_s, extra_args=["--config", str(config)], ports=PORTS) as server:
            yield server


def speak_once(client: httpx.Client, text: str, voice: str, fmt: str) -> dict[str, float]:
    body = {"model": "tts-1", "input": text, "voice": voice, "response_format": fmt}
    started = time.perf_counter()
    first = None
    size = 0
    with client.stream("POST", "/audio/speech", json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if chunk and first is None:
                first = time.perf_counter() - started
            size += len(chunk)
    total = time.perf_counter() - started
    assert first is not None, "no audio"
    result = {"first_byte_ms": round(first * 1000, 1), "total_ms": round(total * 1000, 1)}
    if fmt == "pcm":
        audio_s = size / PCM_BYTES_PER_S
        result |= {"audio_s": round(audio_s, 3), "rtf": round(total / audio_s, 3)}
    return result


def transcribe_once(client: httpx.Client, clip: Path) -> dict[str, float]:
    data = clip.read_bytes()
    started = time.perf_counter()
    response = client.post(
        "/audio/transcriptions", files={"file": (clip.name, data, "audio/wav")}, data={"model": "whisper-1"}
    )
    response.raise_for_status()
    latency = time.perf_counter() - started
    duration = sf.info(clip).duration
    return {
        "audio_s": round(duration, 2),
        "latency_ms": round(latency * 1000, 1),
        "ms_per_audio_s": round(latency * 1000 / duration, 1),
    }


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    speech: dict[str, list[dict[str, float]]] = {}
    transcription: dict[str, list[dict[str, float]]] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        for chars, text in TEXTS.items():
            assert len(text) == chars, (chars, len(text))
            speak_once(client, text, args.voice, args.format)  # warm-up, not counted
            speech[str(chars)] = [speak_once(client, text, args.voice, args.format) for _ in range(args.runs)]
            logger.info("%3d chars: %s", chars, speech[str(chars)])
        for name in CLIPS:
            transcribe_once(client, DATA / name)
            transcription[name] = [transcribe_once(client, DATA / name) for _ in range(args.asr_runs)]
            logger.info("%s: %s", name, transcription[name])
    return {"speech": speech, "transcription": transcription}


def tables(results: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    summary: dict[str, Any] = {"speech": {}, "transcription": {}}
    lines = [
        "| input (chars) | audio (s) | first byte p50 (ms) | first byte min-max (ms) | RTF p50 | RTF min-max |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for chars, runs in results["speech"].items():
        first = summarize([r["first_byte_ms"] for r in runs])
        row: dict[str, Any] = {"first_byte_ms": first}
        rtf_cells = "| - | - |"
        audio = "-"
        if "rtf" in runs[0]:
            rtf = [r["rtf"] for r in runs]
            row["rtf"] = {"p50": round(sorted(rtf)[len(rtf) // 2], 2), "min": min(rtf), "max": max(rtf)}
            rtf_cells = f"| {row['rtf']['p50']:.2f} | {min(rtf):.2f}-{max(rtf):.2f} |"
            audio = f"{runs[0]['audio_s']:.1f}"
        summary["speech"][chars] = row
        lines.append(f"| {chars} | {audio} | {first['p50']:.0f} | {first['min']:.0f}-{first['max']:.0f} {rtf_cells}")
    asr_lines = [
        "| clip | audio (s) | latency p50 (ms) | per second of audio p50 (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name, runs in results["transcription"].items():
        latency = summarize([r["latency_ms"] for r in runs])
        per_s = summarize([r["ms_per_audio_s"] for r in runs])
        summary["transcription"][name] = {"latency_ms": latency, "ms_per_audio_s": per_s}
        asr_lines.append(f"| {name} | {runs[0]['audio_s']:.1f} | {latency['p50']:.0f} | {per_s['p50']:.0f} |")
    return "\n".join(lines), "\n".join(asr_lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8188/v1", help="a running server's base URL")
    where.add_argument("--spawn", action="store_true", help="start a server on a free port, stop it at the end")
    parser.add_argument("--api-key", default=None, help="API key, if the server requires one")
    parser.add_argument("--runs", type=int, default=5, help="measured requests per input length")
    parser.add_argument("--asr-runs", type=int, default=3, help="measured requests per clip")
    parser.add_argument("--voice", default="jf_alpha")
    parser.add_argument("--format", default="pcm", help="response_format (RTF needs pcm)")
    parser.add_argument("--quiet-wait", type=float, default=0.0, help="first wait up to this long for an idle machine")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="JSON output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = dt.datetime.now().astimezone()
    with spawned_server() if args.spawn else contextlib.nullcontext((args.url, None)) as (url, server_pid):
        health = server_health(url) if not args.api_key else {}
        quiet = wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else []
        meter = CpuMeter(server_pid)
        results = run(url, args)
        cpu = meter.stop()
    speech_table, asr_table, summary = tables(results)
    print("\nspeech (POST /v1/audio/speech, streamed)\n" + speech_table)
    print("\ntranscription (POST /v1/audio/transcriptions)\n" + asr_table)
    print("\ncpu: " + json.dumps({k: v for k, v in cpu.items() if k != "busiest"}))
    report = {
        "benchmark": "speech_latency",
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now().astimezone() - started).total_seconds(), 1),
        "url": "spawned" if args.spawn else args.url,
        "method": {
            "speech": f"streamed POST /v1/audio/speech, response_format {args.format}, voice {args.voice}; "
            f"1 warm-up + {args.runs} runs per input; first byte = request sent -> first body byte; "
            "RTF = response time / audio seconds",
            "transcription": f"POST /v1/audio/transcriptions with the WAV clip; 1 warm-up + {args.asr_runs} runs",
            "compare_with": {"CosyVoice All-in-One Docker image, NVIDIA L40S": COSYVOICE_L40S},
        },
        "machine": machine_info() | {"cpu_during_run": cpu, "busy_cores_while_waiting_for_quiet": quiet},
        "server": health,
        "summary": summary,
        "tables": {"speech": speech_table, "transcription": asr_table},
        "runs": results,
    }
    path = harness.result_path(args.results, "speech_latency", started)
    harness.write_result(path, report)
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
