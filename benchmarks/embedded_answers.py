"""The embedded conversation stacks side by side: {SmolLM2, Qwen2.5-Coder-0.5B} x {Kokoro jf_alpha, Piper joe}.

    .venv/bin/python -m benchmarks.embedded_answers [--runs 1] [--threads 2]

Every question of the everyday prompt set (``tests/data/everyday_questions.yaml``) goes to each
embedded LLM as the product asks it: the llama.cpp server ``cosyagent serve`` starts
(``build_embedded_llm``), the server's system prompt (``realtime.instructions``) and its
``realtime.max_output_tokens``, streamed through the same client. Per reply: time to the first
token and to the first clause (the first piece the synthesizer gets), and whether the generous
checks accept it. Each synthesizer then speaks each LLM's replies the way the product speaks
them (:func:`cosyagent.pipeline.speak.speak`, clause by clause): time to first audio, RTF, and
intelligibility: the word error rate of Whisper tiny.en (the product's ASR) on the audio against
the reply text. Both servers and both synthesizers stay loaded; they take turns per question,
swapping who goes first, so a burst of load elsewhere hits both alike. Medians are reported.
The servers run at the product's ``llm.nice`` unless ``--nice`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import statistics
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import CpuMeter, machine_info, result_path, write_result
from cosyagent.audio.pcm import resample
from cosyagent.config import LLMConfig, RealtimeConfig
from cosyagent.engines.base import SpeechSynthesizer
from cosyagent.engines.kokoro_tts import KokoroTTS
from cosyagent.engines.llm import OpenAICompatibleLLM
from cosyagent.engines.piper_tts import PiperTTS
from cosyagent.engines.whisper_asr import WhisperASR
from cosyagent.pipeline.clauses import ClauseSplitter
from cosyagent.pipeline.speak import speak
from cosyagent.runtime.engine_choice import build_embedded_llm
from tests.prompt_set import Question, load_questions
from tests.support import word_error_rate

logger = logging.getLogger("embedded_answers")

RESULTS = Path(__file__).resolve().parent / "results"
LLMS = {"SmolLM2-135M": "smollm2", "Qwen2.5-Coder-0.5B": "qwen2.5-coder-0.5b"}


@dataclass(frozen=True)
class Answer:
    question: str
    reply: str
    correct: bool
    first_token_s: float
    first_clause_s: float
    total_s: float


@dataclass(frozen=True)
class Spoken:
    first_audio_s: float
    total_s: float
    audio_s: float
    heard: str


@dataclass(frozen=True)
class Voice:
    label: str
    engine: SpeechSynthesizer
    voice: str


async def ask(llm: OpenAICompatibleLLM, question: Question, realtime: RealtimeConfig) -> Answer:
    messages = [{"role": "system", "content": realtime.instructions}, {"role": "user", "content": question.ask}]
    splitter = ClauseSplitter()
    began = time.perf_counter()
    first_token_s = first_clause_s = 0.0
    reply = ""
    async for delta in llm.stream_chat(messages, max_tokens=realtime.max_output_tokens):
        now = time.perf_counter() - began
        first_token_s = first_token_s or now
        reply += delta
        if splitter.push(delta) and not first_clause_s:
            first_clause_s = now
    total_s = time.perf_counter() - began
    first_clause_s = first_clause_s or total_s  # a reply too short to cut: spoken at the end
    return Answer(question.ask, reply.strip(), question.accepts(reply), first_token_s, first_clause_s, total_s)


async def say(voice: Voice, text: str, asr: WhisperASR) -> Spoken:
    began = time.perf_counter()
    first_audio_s = 0.0
    chunks = []
    async for chunk in speak(voice.engine, text, voice=voice.voice):
        if chunk.samples.size:
            first_audio_s = first_audio_s or time.perf_counter() - began
            chunks.append(chunk.samples)
    total_s = time.perf_counter() - began
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    rate = voice.engine.sample_rate
    heard = (await asr.transcribe(resample(audio, rate, asr.sample_rate))).text if audio.size else ""
    return Spoken(first_audio_s, total_s, audio.size / rate, heard)


async def ask_everything(
    llms: dict[str, OpenAICompatibleLLM], questions: list[Question], realtime: RealtimeConfig, runs: int
) -> dict[str, list[Answer]]:
    answers: dict[str, list[Answer]] = {label: [] for label in llms}
    for llm in llms.values():  # warm-up, not counted
        await ask(llm, questions[0], realtime)
    for run in range(runs):
        for index, question in enumerate(questions):
            order = list(llms.items()) if (run + index) % 2 == 0 else list(llms.items())[::-1]
            for label, llm in order:
                answer = await ask(llm, question, realtime)
                answers[label].append(answer)
                logger.info("%s %s: %s %r", label, "ok" if answer.correct else "WRONG", question.ask, answer.reply)
    return answers


async def speak_everything(
    voices: list[Voice], answers: dict[str, list[Answer]], asr: WhisperASR
) -> dict[str, dict[str, list[Spoken]]]:
    spoken: dict[str, dict[str, list[Spoken]]] = {v.label: {llm: [] for llm in answers} for v in voices}
    for voice in voices:  # warm-up, not counted
        await say(voice, "Happy to help.", asr)
    for llm, replies in answers.items():
        for index, answer in enumerate(replies):
            for voice in voices if index % 2 == 0 else voices[::-1]:
                spoken[voice.label][llm].append(await say(voice, answer.reply, asr))
    return spoken


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def combine(answers: dict[str, list[Answer]], spoken: dict[str, dict[str, list[Spoken]]]) -> list[dict[str, Any]]:
    rows = []
    for llm, replies in answers.items():
        for voice, by_llm in spoken.items():
            takes = by_llm[llm]
            said = [t for t, a in zip(takes, replies, strict=True) if a.reply]
            references = " ".join(a.reply for a in replies if a.reply)
            first_clause = _median([a.first_clause_s for a in replies])
            first_audio = _median([t.first_audio_s for t in said])
            rows.append(
                {
                    "llm": llm,
                    "tts": voice,
                    "correct": sum(a.correct for a in replies),
                    "asked": len(replies),
                    "llm_first_token_s": _median([a.first_token_s for a in replies]),
                    "llm_first_clause_s": first_clause,
                    "tts_first_audio_s": first_audio,
                    "first_audio_estimate_s": round(first_clause + first_audio, 3),
                    "tts_rtf": _median([t.total_s / t.audio_s for t in said if t.audio_s]),
                    "wer": round(word_error_rate(references, " ".join(t.heard for t in said)), 3),
                    "heard": [t.heard for t in takes],
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'LLM':<20} {'TTS':<16} {'correct':>8} {'1st token s':>11} {'1st clause s':>12} "
        f"{'TTS 1st audio s':>15} {'sum s':>6} {'RTF':>6} {'WER':>6}"
    )
    for row in rows:
        print(
            f"{row['llm']:<20} {row['tts']:<16} {row['correct']:>3}/{row['asked']:<4} "
            f"{row['llm_first_token_s']:>11.3f} {row['llm_first_clause_s']:>12.3f} "
            f"{row['tts_first_audio_s']:>15.3f} {row['first_audio_estimate_s']:>6.2f} "
            f"{row['tts_rtf']:>6.3f} {row['wer']:>6.1%}"
        )


async def run(runs: int, threads: int, nice: int) -> dict[str, Any]:
    realtime = RealtimeConfig()
    questions = load_questions()
    asr = WhisperASR(cpu_threads=threads)
    kokoro = KokoroTTS(threads=threads)
    piper = PiperTTS(threads=threads)
    voices = [Voice("Kokoro jf_alpha", kokoro, "jf_alpha"), Voice("Piper joe", piper, "joe")]
    for engine in (asr, kokoro, piper):
        engine.load()
    meter = CpuMeter(server_pid=None)
    try:
        async with AsyncExitStack() as stack:
            llms: dict[str, OpenAICompatibleLLM] = {}
            for label, key in LLMS.items():
                server = build_embedded_llm(LLMConfig(embedded_model=key, threads=threads, nice=nice))
                await stack.enter_async_context(server)
                llms[label] = OpenAICompatibleLLM(server.base_url, server.model)
                stack.push_async_callback(llms[label].aclose)
            answers = await ask_everything(llms, questions, realtime, runs)
        spoken = await speak_everything(voices, answers, asr)
    finally:
        for engine in (asr, kokoro, piper):
            engine.close()
    return {
        "runs": runs,
        "threads": threads,
        "llm_nice": nice,
        "instructions": realtime.instructions,
        "max_output_tokens": realtime.max_output_tokens,
        "combinations": combine(answers, spoken),
        "answers": {label: [a.__dict__ for a in replies] for label, replies in answers.items()},
        "cpu": meter.stop(),
    }


def rescore(path: Path) -> None:
    """Apply the prompt set's current checks to the replies a result file holds; print the new counts."""
    report = json.loads(path.read_text(encoding="utf-8"))
    questions = {q.ask: q for q in load_questions()}
    for llm, replies in report["answers"].items():
        correct = sum(questions[a["question"]].accepts(a["reply"]) for a in replies)
        print(f"{llm}: {correct}/{len(replies)} correct ({path.name} said {sum(a['correct'] for a in replies)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rescore", type=Path, help="a result file: re-check its replies, run nothing")
    parser.add_argument("--runs", type=int, default=1, help="times the whole prompt set is asked")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--nice",
        type=int,
        default=LLMConfig().nice,
        help="the llama.cpp servers' priority (the product's llm.nice); 0 on a machine others keep busy, "
        "where a niced server gets almost no CPU",
    )
    args = parser.parse_args()
    if args.rescore:
        rescore(args.rescore)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()
    report = asyncio.run(run(args.runs, args.threads, args.nice))
    report = {"started": started.isoformat(timespec="seconds"), "machine": machine, **report}
    print_table(report["combinations"])
    print(f"machine busy cores during the runs: {report['cpu']['machine_busy_cores']}")
    path = result_path(RESULTS, "embedded-answers", started)
    write_result(path, report)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
