"""Live captions: how soon a transcription session tells the words, measured at the client.

    .venv/bin/python -m benchmarks.caption_lag --spawn [--runs 3] [--language en]
    .venv/bin/python -m benchmarks.caption_lag --url http://127.0.0.1:8188/v1 [--api-key KEY]

Real recordings of ``tests/data`` are spoken in real time (100 ms chunks of 24 kHz PCM) into a
transcription session (``?intent=transcription``, the server's default turn detection), one
session at a time. For each turn: **first caption**, from the moment its speech began to be sent
(``speech_started``'s ``audio_start_ms``, as paced) to the first transcription delta; **told while
speaking**, the share of the final transcript's words whose deltas arrived before
``speech_stopped``; **final**, from the moment its last speech was sent (``audio_end_ms``) to
``completed`` (the silence wait included). ``--language en`` names the language, so no caption
waits for the language screen. Results: a table on stdout and JSON in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from openai import AsyncOpenAI

from benchmarks import harness
from benchmarks.harness import machine_info, server_health, summarize
from cosyagent.audio.pcm import float_to_pcm16, resample

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
PORTS = range(8500, 8600)
RATE = 24000
CHUNK_S = 0.1
CLIPS = {  # name: (file, start s, end s): stretches of real speech
    "dublin question": ("en_dublin_q.wav", 0.0, 2.6),
    "wealth-tax question": ("en_wealth_tax_q.wav", 0.0, 3.5),
    "philosophy, 8 s": ("en_philosophy_22s.wav", 0.0, 8.0),
    "lecture, 12 s": ("en_lecture_60s.wav", 0.0, 12.0),
}
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"

logger = logging.getLogger("caption_lag")


def clip_audio(name: str, start_s: float, end_s: float) -> np.ndarray:
    audio, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    mono = resample(np.asarray(audio.mean(axis=1), dtype=np.float32), rate, RATE)
    return mono[int(start_s * RATE) : int(end_s * RATE)]


async def caption_once(url: str, api_key: str, audio: np.ndarray, language: str | None) -> list[dict[str, Any]]:
    """One clip spoken into a fresh transcription session; one record per turn."""
    client = AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0)
    speech = np.concatenate([audio, np.zeros(int(2.5 * RATE), np.float32)])  # then silence ends the turn
    events: list[tuple[float, Any]] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        if language:
            named: Any = {"type": "transcription", "audio": {"input": {"transcription": {"language": language}}}}
            await conn.session.update(session=named)
        started = time.monotonic()

        async def send() -> None:
            step = int(CHUNK_S * RATE)
            for index, offset in enumerate(range(0, speech.size, step)):
                chunk = base64.b64encode(float_to_pcm16(speech[offset : offset + step])).decode()
                await conn.input_audio_buffer.append(audio=chunk)
                await asyncio.sleep(max(0.0, started + (index + 1) * CHUNK_S - time.monotonic()))

        async def receive() -> None:
            async for event in conn:
                events.append((time.monotonic() - started, event))

        reader = asyncio.create_task(receive())
        await send()
        await asyncio.sleep(2.0)  # the last turn's transcript
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return turns(events)


def turns(events: list[tuple[float, Any]]) -> list[dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for at, event in events:
        item_id = getattr(event, "item_id", None)
        if item_id is None:
            continue
        turn = records.setdefault(item_id, {"deltas": []})
        if event.type == "input_audio_buffer.speech_started":
            turn["speech_start_s"] = event.audio_start_ms / 1000
        elif event.type == "input_audio_buffer.speech_stopped":
            turn["speech_end_s"], turn["stopped_at"] = event.audio_end_ms / 1000, at
        elif event.type == DELTA:
            turn["deltas"].append((at, event.delta))
        elif event.type == COMPLETED:
            turn["completed_at"], turn["transcript"] = at, event.transcript
    results = []
    for turn in records.values():
        if "transcript" not in turn or "speech_start_s" not in turn or not turn["transcript"].strip():
            continue
        told = "".join(delta for at, delta in turn["deltas"] if at < turn["stopped_at"])
        words = turn["transcript"].split()
        results.append(
            {
                "transcript": turn["transcript"],
                "speech_s": round(turn["speech_end_s"] - turn["speech_start_s"], 2),
                "first_caption_s": round(turn["deltas"][0][0] - turn["speech_start_s"], 3) if turn["deltas"] else None,
                "told_while_speaking": round(len(told.split()) / len(words), 3) if words else 0.0,
                "final_after_speech_s": round(turn["completed_at"] - turn["speech_end_s"], 3),
            }
        )
    return results


def table(results: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    lines = [
        "| clip | turns | speech s | first caption s (p50 / max) | told while speaking (mean) "
        "| final after speech s (p50) |",
        "|---|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for name, records in results.items():
        firsts = [r["first_caption_s"] for r in records if r["first_caption_s"] is not None]
        told = [r["told_while_speaking"] for r in records]
        finals = [r["final_after_speech_s"] for r in records]
        first = summarize(firsts) if firsts else {}
        final = summarize(finals) if finals else {}
        summary[name] = {"first_caption_s": first, "told_while_speaking": told, "final_after_speech_s": final}
        lines.append(
            f"| {name} | {len(records)} | {np.mean([r['speech_s'] for r in records]):.1f} | "
            f"{first.get('p50', float('nan')):.2f} / {first.get('max', float('nan')):.2f} | "
            f"{100 * np.mean(told):.0f}% | {final.get('p50', float('nan')):.2f} |"
        )
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8188/v1", help="a running server's base URL")
    where.add_argument("--spawn", action="store_true", help="start a server on a free port, stop it at the end")
    parser.add_argument("--api-key", default="unused", help="API key, if the server requires one")
    parser.add_argument("--runs", type=int, default=3, help="times each clip is spoken")
    parser.add_argument("--language", default=None, help="the session's transcription language (e.g. en)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="JSON output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = dt.datetime.now().astimezone()
    server = harness.spawned_server(ports=PORTS) if args.spawn else contextlib.nullcontext((args.url, None))
    results: dict[str, list[dict[str, Any]]] = {}
    with server as (url, _pid):
        health = server_health(url)
        for name, (clip, start_s, end_s) in CLIPS.items():
            audio = clip_audio(clip, start_s, end_s)
            results[name] = []
            for run in range(args.runs):
                records = asyncio.run(caption_once(url, args.api_key, audio, args.language))
                logger.info("%s, run %d: %s", name, run + 1, records)
                results[name] += records
    text, summary = table(results)
    print(f"\nlive captions ({'language ' + args.language if args.language else 'language screened'})\n" + text)
    report = {
        "benchmark": "caption_lag",
        "started": started.isoformat(timespec="seconds"),
        "url": "spawned" if args.spawn else args.url,
        "language": args.language,
        "machine": machine_info(),
        "server": health,
        "summary": summary,
        "table": text,
        "runs": results,
    }
    path = harness.result_path(args.results, "caption_lag", started)
    harness.write_result(path, report)
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
