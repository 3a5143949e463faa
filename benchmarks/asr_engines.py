"""The embedded recognizers side by side: Whisper tiny.en against Moonshine base-en, in-process.

    .venv/bin/python -m benchmarks.asr_engines [--runs 5] [--threads 2] [--long]

Each English clip of ``tests/data`` with a reference text (and with ``--long`` the 60 s
lecture, latency only) is transcribed by each engine once first (not counted), then ``--runs``
times, the engines taking turns on every clip and swapping who goes first every run, so that a
burst of load elsewhere hits both alike. No engine runs while the other is timed. Reported:
the median seconds from the ``transcribe`` call to its result, per clip, and the word error
rate against the reference (greedy decoding: the same text every run). Results: a table on
stdout and JSON in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import CpuMeter, machine_info, result_path, write_result
from cosyagent.engines.base import AudioF32, SpeechRecognizer
from cosyagent.engines.moonshine_asr import MoonshineASR
from cosyagent.engines.whisper_asr import WhisperASR
from tests.support import REFERENCES, read_clip, word_error_rate

logger = logging.getLogger("asr_engines")

RESULTS = Path(__file__).resolve().parent / "results"
CLIPS = ["en_dublin_q.wav", "en_wealth_tax_q.wav", "en_news_movement_8k.wav", "en_philosophy_22s.wav"]
LONG_CLIP = "en_lecture_60s.wav"


async def timed(engine: SpeechRecognizer, audio: AudioF32) -> tuple[float, str]:
    began = time.perf_counter()
    result = await engine.transcribe(audio, language="en")
    return time.perf_counter() - began, result.text


async def measure(
    engines: dict[str, SpeechRecognizer], clips: dict[str, AudioF32], runs: int
) -> dict[str, dict[str, dict[str, Any]]]:
    rows: dict[str, dict[str, dict[str, Any]]] = {name: {label: {"seconds": []} for label in engines} for name in clips}
    for name, audio in clips.items():
        for label, engine in engines.items():
            _, text = await timed(engine, audio)  # warm-up, not counted
            rows[name][label]["text"] = text
            if name in REFERENCES:
                rows[name][label]["wer"] = round(word_error_rate(REFERENCES[name], text), 3)
    labels = list(engines)
    for run in range(runs):
        order = labels if run % 2 == 0 else labels[::-1]
        for name, audio in clips.items():
            for label in order:
                seconds, _ = await timed(engines[label], audio)
                rows[name][label]["seconds"].append(round(seconds, 3))
                logger.info("run %d %s %s: %.3f s", run + 1, name, label, seconds)
    for by_engine in rows.values():
        for row in by_engine.values():
            row["median_s"] = round(statistics.median(row["seconds"]), 3)
    return rows


def pooled_wer(rows: dict[str, dict[str, dict[str, Any]]], label: str) -> float:
    """Errors over words, all reference clips together."""
    named = [(name, by_engine[label]) for name, by_engine in rows.items() if name in REFERENCES]
    errors = sum(row["wer"] * len(REFERENCES[name].split()) for name, row in named)
    return float(errors / sum(len(REFERENCES[name].split()) for name, _ in named))


def print_table(rows: dict[str, dict[str, dict[str, Any]]], durations: dict[str, float]) -> None:
    print(f"{'clip':<26} {'audio s':>7} {'whisper s':>9} {'moonshine s':>11} {'ratio':>6} {'WER w':>6} {'WER m':>6}")
    for name, by_engine in rows.items():
        whisper, moonshine = by_engine["whisper"], by_engine["moonshine"]
        wers = [f"{row['wer']:>6.1%}" if "wer" in row else f"{'-':>6}" for row in (whisper, moonshine)]
        print(
            f"{name:<26} {durations[name]:>7.1f} {whisper['median_s']:>9.3f} {moonshine['median_s']:>11.3f} "
            f"{moonshine['median_s'] / whisper['median_s']:>6.2f} {wers[0]} {wers[1]}"
        )
    print(
        f"{'pooled WER':<26} {'':>7} {'':>9} {'':>11} {'':>6} {pooled_wer(rows, 'whisper'):>6.1%} "
        f"{pooled_wer(rows, 'moonshine'):>6.1%}"
    )


async def run(runs: int, threads: int, long: bool) -> dict[str, Any]:
    engines: dict[str, SpeechRecognizer] = {
        "whisper": WhisperASR(cpu_threads=threads),
        "moonshine": MoonshineASR(cpu_threads=threads),
    }
    load_s: dict[str, float] = {}
    for label, engine in engines.items():
        began = time.perf_counter()
        engine.load()
        load_s[label] = round(time.perf_counter() - began, 2)
    clips = {name: read_clip(name, 16_000) for name in [*CLIPS, *([LONG_CLIP] if long else [])]}
    meter = CpuMeter(server_pid=None)
    try:
        rows = await measure(engines, clips, runs)
    finally:
        for engine in engines.values():
            engine.close()
    durations = {name: round(audio.size / 16_000, 2) for name, audio in clips.items()}
    wer = {label: round(pooled_wer(rows, label), 3) for label in engines}
    return {
        "runs": runs,
        "threads": threads,
        "load_s": load_s,
        "durations_s": durations,
        "results": rows,
        "pooled_wer": wer,
        "cpu": meter.stop(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long", action="store_true", help=f"also time {LONG_CLIP} (no reference text)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    report = asyncio.run(run(args.runs, args.threads, args.long))
    report = {"started": started.isoformat(timespec="seconds"), "machine": machine, **report}
    print_table(report["results"], report["durations_s"])
    print(f"load s: {report['load_s']}; machine busy cores during the runs: {report['cpu']['machine_busy_cores']}")
    path = result_path(RESULTS, "asr-engines", started)
    write_result(path, report)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
