"""The embedded synthesizers side by side: Kokoro (jf_alpha, and af_heart of kokoro-js when
installed) against Piper (joe), in-process.

    .venv/bin/python -m benchmarks.embedded_models [--runs 5] [--threads 2]

For a 3-word clause and a 15-word sentence, each engine is timed from the ``synthesize`` call
to its first chunk (first audio) and to its last (RTF: synthesis time over seconds of audio);
the whole audio is then resampled to 16 kHz and transcribed by Whisper tiny.en, and the word
error rate against the text measures intelligibility. Each engine speaks each text once first
(not counted), then ``--runs`` times, the engines taking turns and swapping who goes first
every run so that a burst of load elsewhere hits both alike. Medians are reported. No engine
runs while another is timed. Results: a table on stdout and JSON in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import CpuMeter, machine_info, result_path, write_result
from cosyagent.audio.pcm import resample
from cosyagent.engines.base import AudioF32, SpeechSynthesizer
from cosyagent.engines.kokoro_tts import KokoroTTS
from cosyagent.engines.piper_tts import PiperTTS
from cosyagent.engines.whisper_asr import WhisperASR
from tests.support import word_error_rate

logger = logging.getLogger("embedded_models")

RESULTS = Path(__file__).resolve().parent / "results"
TEXTS = {
    "clause_3_words": "Happy to help.",
    # No numbers: Whisper writes "nine" as "9", which a plain WER counts as an error.
    "sentence_15_words": "Take the second door on the left and wait by the window for a while.",
}


@dataclass(frozen=True)
class Contender:
    label: str
    engine: SpeechSynthesizer
    voice: str


@dataclass(frozen=True)
class Take:
    first_audio_s: float
    total_s: float
    audio_s: float
    wer: float
    heard: str


async def speak(contender: Contender, text: str, asr: WhisperASR) -> Take:
    engine = contender.engine
    began = time.perf_counter()
    first_audio_s = 0.0
    chunks: list[AudioF32] = []
    async for chunk in engine.synthesize(text, voice=contender.voice):
        if not chunks:
            first_audio_s = time.perf_counter() - began
        chunks.append(chunk)
    total_s = time.perf_counter() - began
    audio = np.concatenate(chunks)
    heard = (await asr.transcribe(resample(audio, engine.sample_rate, asr.sample_rate))).text
    wer = word_error_rate(text, heard)
    return Take(first_audio_s, total_s, audio.size / engine.sample_rate, wer, heard)


async def measure(contenders: list[Contender], asr: WhisperASR, runs: int) -> dict[str, dict[str, list[Take]]]:
    takes: dict[str, dict[str, list[Take]]] = {c.label: {name: [] for name in TEXTS} for c in contenders}
    for contender in contenders:
        for text in TEXTS.values():
            await speak(contender, text, asr)  # warm-up, not counted
    for run in range(runs):
        order = contenders if run % 2 == 0 else contenders[::-1]
        for name, text in TEXTS.items():
            for contender in order:
                take = await speak(contender, text, asr)
                takes[contender.label][name].append(take)
                logger.info("run %d %s %s: first audio %.3f s", run + 1, contender.label, name, take.first_audio_s)
    return takes


def summary(takes: list[Take]) -> dict[str, Any]:
    return {
        "first_audio_s": round(statistics.median(t.first_audio_s for t in takes), 3),
        "rtf": round(statistics.median(t.total_s / t.audio_s for t in takes), 3),
        "audio_s": round(statistics.median(t.audio_s for t in takes), 2),
        "wer": round(statistics.median(t.wer for t in takes), 3),
        "heard": [t.heard for t in takes],
    }


def print_table(report: dict[str, dict[str, dict[str, Any]]]) -> None:
    print(f"{'engine':<20} {'text':<18} {'first audio s':>13} {'RTF':>6} {'audio s':>8} {'WER':>6}")
    for label, by_text in report.items():
        for name, row in by_text.items():
            print(
                f"{label:<20} {name:<18} {row['first_audio_s']:>13.3f} {row['rtf']:>6.3f} "
                f"{row['audio_s']:>8.2f} {row['wer']:>6.1%}"
            )


async def run(runs: int, threads: int) -> dict[str, Any]:
    asr = WhisperASR(cpu_threads=threads)
    kokoro = KokoroTTS(threads=threads)
    piper = PiperTTS(threads=threads)
    for engine in (asr, kokoro, piper):
        engine.load()
    contenders = [Contender("kokoro jf_alpha", kokoro, "jf_alpha"), Contender("piper joe", piper, "joe")]
    if "af_heart" in kokoro.voices():  # kokoro-js's English voices (make install)
        contenders.insert(1, Contender("kokoro af_heart", kokoro, "af_heart"))
    meter = CpuMeter(server_pid=None)
    try:
        takes = await measure(contenders, asr, runs)
    finally:
        for engine in (asr, kokoro, piper):
            engine.close()
    rows = {label: {name: summary(t) for name, t in by_text.items()} for label, by_text in takes.items()}
    return {"runs": runs, "threads": threads, "texts": TEXTS, "results": rows, "cpu": meter.stop()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    report = asyncio.run(run(args.runs, args.threads))
    report = {"started": started.isoformat(timespec="seconds"), "machine": machine, **report}
    print_table(report["results"])
    print(f"machine busy cores during the runs: {report['cpu']['machine_busy_cores']}")
    path = result_path(RESULTS, "embedded-models", started)
    write_result(path, report)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
