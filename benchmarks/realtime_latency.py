"""Voice-to-voice and barge-in latency of a cosyagent server, measured at the client.

    .venv/bin/python benchmarks/realtime_latency.py --spawn [--turns 10] [--barge-ins 5] [--sessions 1]
    .venv/bin/python benchmarks/realtime_latency.py --url http://127.0.0.1:8188/v1

Real recorded speech (``tests/data``) is cut into single utterances at its pauses and spoken
to the server through the official ``openai`` SDK by a simulated microphone
(:class:`cosyagent.talk.Microphone`: 100 ms chunks, each sent when its last sample has been
"spoken", silence between utterances, as a live client would send). Each session is one
Realtime conversation: ``--turns`` utterances in a row, each waiting for the whole reply to
play out, then ``--barge-ins`` trials where a second utterance starts 0.5 s into a reply.
``--sessions N`` runs N such conversations at once (a concurrency test; default 1).

Every time is ``time.monotonic()`` at the client. The end (start) of the user's speech is
where the clip's speech really ends (begins) in the stream, found by energy, not when the
client stopped sending. Results: a table on stdout and JSON in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness  # benchmarks/ is on sys.path when run as a script
import soundfile as sf
from harness import (  # benchmarks/ is on sys.path when run as a script
    CpuMeter,
    machine_info,
    server_health,
    spawned_server,
    summarize,
    wait_until_quiet,
)
from openai.types.realtime import InputAudioBufferSpeechStartedEvent, ResponseAudioDeltaEvent, ResponseDoneEvent

from cosyagent.talk import (
    RATE,
    Clip,
    EventStream,
    Microphone,
    TalkError,
    TurnCollector,
    TurnResult,
    connect,
    elapsed_ms,
    speech_segments,
)

logger = logging.getLogger("realtime_latency")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CLIPS = ("en_lecture_60s.wav", "en_news_movement_8k.wav")
BARGE_IN_AFTER_S = 0.5  # start the interrupting utterance this long after the reply's first audio
PLAYBACK_MARGIN_S = 0.5  # the user waits for the reply to finish playing, plus this


# --- utterances ------------------------------------------------------------------------------------


def utterances(min_s: float = 1.0, max_s: float = 8.0, pad_s: float = 0.2) -> list[Clip]:
    """Single utterances cut from the real recordings at pauses of 0.45 s or more, with up to
    ``pad_s`` of the recording's own room tone either side."""
    clips: list[Clip] = []
    for name in CLIPS:
        audio, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
        whole = Clip.from_audio(audio.mean(axis=1), int(rate), name)
        samples = whole.samples
        segments = speech_segments(samples, RATE, min_speech_s=0.4)
        for i, (start, end) in enumerate(segments):
            if not min_s <= end - start <= max_s:
                continue
            before = segments[i - 1][1] if i else 0.0
            after = segments[i + 1][0] if i + 1 < len(segments) else samples.size / RATE
            cut_from = max(before + (start - before) / 2, start - pad_s, 0.0)
            cut_to = min(after - (after - end) / 2, end + pad_s, samples.size / RATE)
            piece = samples[int(cut_from * RATE) : int(cut_to * RATE)]
            clips.append(Clip(piece, start - cut_from, min(end - cut_from, piece.size / RATE), f"{name}@{start:.2f}"))
    return clips


# --- one conversation ------------------------------------------------------------------------------


@dataclass
class SessionRecord:
    index: int
    turns: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    max_send_lag_ms: float = 0.0


def _turn_record(clip: Clip, result: TurnResult, mic: Microphone, ok: bool) -> dict[str, Any]:
    stream_end_ms = (result.speech_end_at - mic.started_at) * 1000.0
    record: dict[str, Any] = {
        "clip": clip.name,
        "speech_s": round(clip.speech_end_s - clip.speech_start_s, 2),
        "ok": ok,
        "status": result.status,
        "user_transcripts": result.user_transcripts,
        "reply_text": result.reply_text.strip()[:300],
        "first_clause": result.first_clause_text.strip(),
        "reply_audio_s": round(result.reply_audio_s, 2),
        "voice_to_voice_ms": result.voice_to_voice_ms,
        "end_of_turn_ms": result.end_of_turn_ms,
        "asr_ms": result.asr_ms,
        "server_timings_ms": result.server_timings_ms,
        "first_audio_after_response_created_ms": elapsed_ms(result.created_at, result.first_audio_at),
        "server_vad_end_lag_ms": None
        if result.vad_audio_end_ms is None
        else round(result.vad_audio_end_ms - stream_end_ms, 1),
        "interrupted_responses": len(result.interrupted_responses),
        "late_audio_deltas": result.late_audio_deltas,
    }
    if not ok or result.interrupted_responses:
        record["timeline"] = _compact(result.timeline)
    return record


def _compact(timeline: list[tuple[float, str]]) -> list[str]:
    """The timeline without runs of the same streaming event."""
    out: list[str] = []
    for at, kind in timeline:
        if out and kind.endswith(".delta") and out[-1].endswith(kind):
            continue
        out.append(f"{at:+.3f} {kind}")
    return out


async def _feed_until(events: EventStream, collectors: list[TurnCollector], until: float) -> None:
    """Keep feeding events (late audio is counted) until ``until``."""
    while True:
        try:
            item = await events.next(until)
        except TimeoutError:
            return
        for collector in collectors:
            collector.feed(item)


async def _speak_turn(
    events: EventStream, mic: Microphone, clip: Clip, timeout_s: float, record: SessionRecord
) -> TurnCollector | None:
    """Speak ``clip`` and wait for its complete reply; None (and a failed record) on timeout."""
    start = mic.play(clip.pcm16())
    collector = TurnCollector(start + clip.speech_end_s)
    try:
        while not collector.feed(await events.next(time.monotonic() + timeout_s)):
            pass
    except TimeoutError:
        record.turns.append(_turn_record(clip, collector.result, mic, ok=False))
        record.errors.append(f"turn on {clip.name}: the server went quiet for {timeout_s:g} s before the reply ended")
        return None
    return collector


async def _wait_playback(events: EventStream, collector: TurnCollector) -> None:
    result = collector.result
    played_at = (result.first_audio_at or result.done_at or time.monotonic()) + result.reply_audio_s
    await _feed_until(events, [collector], max(played_at, result.done_at or 0.0) + PLAYBACK_MARGIN_S)


class BargeInProbe:
    """Watches an interrupted response: when speech was detected, when the response ended, and
    whether any of its audio arrived after that."""

    def __init__(self, response_id: str, speech_begin_at: float) -> None:
        self.response_id = response_id
        self.speech_begin_at = speech_begin_at
        self.speech_started_at: float | None = None
        self.done_at: float | None = None
        self.status: str | None = None
        self.reason: str | None = None
        self.audio_after_speech_started_ms = 0.0
        self.deltas_after_done = 0

    def feed(self, at: float, event: object) -> None:
        if isinstance(event, InputAudioBufferSpeechStartedEvent) and self.speech_started_at is None:
            self.speech_started_at = at
        elif isinstance(event, ResponseAudioDeltaEvent) and event.response_id == self.response_id:
            if self.done_at is not None:
                self.deltas_after_done += 1
            elif self.speech_started_at is not None:
                self.audio_after_speech_started_ms += len(event.delta) * 3 / 4 / 2 / RATE * 1000.0
        elif isinstance(event, ResponseDoneEvent) and event.response.id == self.response_id:
            self.done_at, self.status = at, event.response.status
            details = event.response.status_details
            self.reason = details.reason if details is not None else None

    def record(self) -> dict[str, Any]:
        def ms(at: float | None) -> float | None:
            return None if at is None else round((at - self.speech_begin_at) * 1000.0, 1)

        return {
            "response_status": self.status,
            "reason": self.reason,
            "speech_started_ms": ms(self.speech_started_at),
            "response_done_ms": ms(self.done_at),
            "audio_after_speech_started_ms": round(self.audio_after_speech_started_ms, 1),
            "deltas_after_response_done": self.deltas_after_done,
            "done_before_speech_started": self.done_at is not None
            and (self.speech_started_at is None or self.done_at < self.speech_started_at),
        }


async def _barge_in(
    events: EventStream, mic: Microphone, first: Clip, second: Clip, timeout_s: float, record: SessionRecord
) -> None:
    start = mic.play(first.pcm16())
    reply = TurnCollector(start + first.speech_end_s)
    try:
        while reply.result.first_audio_at is None and not reply.feed(await events.next(time.monotonic() + timeout_s)):
            pass
    except TimeoutError:
        record.errors.append(f"barge-in on {first.name}: the server went quiet for {timeout_s:g} s")
        return
    first_audio_at = reply.result.first_audio_at or time.monotonic()
    await _feed_until(events, [reply], first_audio_at + BARGE_IN_AFTER_S)
    trial: dict[str, Any] = {"reply_clip": first.name, "barge_in_clip": second.name}
    if reply.complete or reply.result.response_id is None:
        trial["skipped"] = "the reply ended before the barge-in"
        record.barge_ins.append(trial)
        await _wait_playback(events, reply)
        return
    interrupt_at = mic.play(second.pcm16())
    probe = BargeInProbe(reply.result.response_id, interrupt_at + second.speech_start_s)
    answer = TurnCollector(interrupt_at + second.speech_end_s)
    try:
        while True:
            item = await events.next(time.monotonic() + timeout_s)
            probe.feed(item.at, item.event)
            if answer.feed(item):
                break
    except TimeoutError:
        record.errors.append(f"barge-in with {second.name}: the server went quiet for {timeout_s:g} s")
        trial["answer"] = _turn_record(second, answer.result, mic, ok=False)
    else:
        trial["voice_to_voice_after_barge_in_ms"] = answer.result.voice_to_voice_ms
        trial["answer"] = _turn_record(second, answer.result, mic, ok=True)
        trial["answer"]["timeline"] = _compact(answer.result.timeline)
        await _wait_playback(events, answer)
    trial.update(probe.record())
    if trial["done_before_speech_started"]:
        trial["skipped"] = "the reply ended before speech_started"
    record.barge_ins.append(trial)


async def run_session(url: str, index: int, clips: list[Clip], args: argparse.Namespace) -> SessionRecord:
    record = SessionRecord(index)
    order = [clips[(index * 3 + i) % len(clips)] for i in range(args.turns + 2 * args.barge_ins)]
    try:
        async with connect(url, None) as conn:
            events = EventStream(conn)
            events.start()
            mic = Microphone(conn, keep_alive=True)
            try:
                await events.expect("session.created", time.monotonic() + 10.0)
                mic.start()
                await asyncio.sleep(1.0)  # the microphone is open before anyone speaks
                for clip in order[: args.turns]:
                    collector = await _speak_turn(events, mic, clip, args.timeout, record)
                    if collector is not None:
                        record.turns.append(_turn_record(clip, collector.result, mic, ok=True))
                        await _wait_playback(events, collector)
                    log_turn(index, record)
                pairs = order[args.turns :]
                for first, second in zip(pairs[::2], pairs[1::2], strict=True):
                    await _barge_in(events, mic, first, second, args.timeout, record)
                    log_barge_in(index, record)
            finally:
                record.max_send_lag_ms = round(mic.max_send_lag_s * 1000.0, 1)
                await mic.aclose()
                await events.aclose()
    except TalkError as exc:
        record.errors.append(str(exc))
        logger.error("session %d: %s", index, exc)
    return record


def log_turn(index: int, record: SessionRecord) -> None:
    turn = record.turns[-1] if record.turns else {}
    logger.info(
        "session %d turn %d: v2v %s ms, heard %r",
        index,
        len(record.turns),
        turn.get("voice_to_voice_ms"),
        " / ".join(turn.get("user_transcripts", [])),
    )


def log_barge_in(index: int, record: SessionRecord) -> None:
    trial = record.barge_ins[-1] if record.barge_ins else {}
    logger.info(
        "session %d barge-in %d: speech_started %s ms, response.done %s (%s) ms",
        index,
        len(record.barge_ins),
        trial.get("speech_started_ms"),
        trial.get("response_done_ms"),
        trial.get("response_status", trial.get("skipped")),
    )


# --- the report ----------------------------------------------------------------------------------

TURN_METRICS = {
    "voice_to_voice_ms": "voice-to-voice (end of speech -> first audio)",
    "end_of_turn_ms": "end-of-turn detection (-> speech_stopped)",
    "asr_ms": "ASR (speech_stopped -> transcript)",
    "llm_first_token_ms": "server: LLM first token",
    "first_clause_ms": "server: first clause",
    "tts_first_audio_ms": "server: TTS first audio",
    "first_audio_after_response_created_ms": "response.created -> first audio (client)",
    "server_vad_end_lag_ms": "server VAD audio_end_ms - true speech end",
}
BARGE_METRICS = {
    "speech_started_ms": "barge-in: speech begins -> speech_started",
    "response_done_ms": "barge-in: speech begins -> response.done",
    "audio_after_speech_started_ms": "barge-in: reply audio received after speech_started",
    "voice_to_voice_after_barge_in_ms": "barge-in: voice-to-voice of the interrupting turn",
}


def _values(records: list[SessionRecord]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {key: [] for key in [*TURN_METRICS, *BARGE_METRICS]}
    for record in records:
        for turn in (t for t in record.turns if t["ok"]):
            timings = {f"{k}_ms": v for k, v in turn["server_timings_ms"].items()}
            for key in TURN_METRICS:
                value = turn.get(key, timings.get(key))
                if value is not None:
                    values[key].append(float(value))
        for trial in (t for t in record.barge_ins if "skipped" not in t):
            for key in BARGE_METRICS:
                value = trial.get(key)
                if value is not None:
                    values[key].append(float(value))
    return values


def print_table(summary: dict[str, dict[str, float]], labels: dict[str, str]) -> None:
    print(f"{'metric':<54} {'n':>3} {'p50':>7} {'p95':>7} {'min':>7} {'max':>7}")
    for key, label in labels.items():
        stats = summary.get(key)
        if not stats:
            print(f"{label:<54} {0:>3} {'-':>7} {'-':>7} {'-':>7} {'-':>7}")
            continue
        cells = " ".join(f"{stats[name]:>7.0f}" for name in ("p50", "p95", "min", "max"))
        print(f"{label:<54} {int(stats['n']):>3} {cells}")


def checks(records: list[SessionRecord]) -> dict[str, Any]:
    trials = [t for r in records for t in r.barge_ins if "skipped" not in t]
    return {
        "turns_ok": sum(t["ok"] for r in records for t in r.turns),
        "turns_failed": sum(not t["ok"] for r in records for t in r.turns),
        "turns_with_interrupted_responses": sum(t["interrupted_responses"] > 0 for r in records for t in r.turns),
        "late_audio_deltas_after_response_done": sum(t["late_audio_deltas"] for r in records for t in r.turns)
        + sum(t["deltas_after_response_done"] for t in trials),
        "barge_ins_measured": len(trials),
        "barge_ins_skipped_reply_ended_first": sum("skipped" in t for r in records for t in r.barge_ins),
        "barge_ins_not_cancelled": sum(t["response_status"] != "cancelled" for t in trials),
        "errors": [e for r in records for e in r.errors],
    }


async def benchmark(url: str, args: argparse.Namespace) -> list[SessionRecord]:
    clips = utterances()
    logger.info("%d utterances from %s", len(clips), ", ".join(CLIPS))
    sessions = [run_session(url, i, clips, args) for i in range(args.sessions)]
    return list(await asyncio.gather(*sessions))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8188/v1", help="a running server's base URL")
    where.add_argument("--spawn", action="store_true", help="start a server on a free port, stop it at the end")
    parser.add_argument("--turns", type=int, default=10, help="latency turns per session")
    parser.add_argument("--barge-ins", type=int, default=5, help="barge-in trials per session")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a turn after this many quiet seconds")
    parser.add_argument(
        "--quiet-wait", type=float, default=0.0, help="first wait up to this many seconds for the machine to go idle"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="JSON output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = dt.datetime.now().astimezone()
    with spawned_server() if args.spawn else contextlib.nullcontext((args.url, None)) as (url, server_pid):
        health = server_health(url)
        quiet = wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else []
        meter = CpuMeter(server_pid)
        records = asyncio.run(benchmark(url, args))
        cpu = meter.stop()
    values = _values(records)
    summary = {key: summarize(vals) for key, vals in values.items() if vals}
    verdict = checks(records)
    print()
    print_table(summary, TURN_METRICS | BARGE_METRICS)
    print()
    print(json.dumps({k: v for k, v in verdict.items() if k != "errors"}))
    for error in verdict["errors"]:
        print(f"error: {error}")
    print("cpu: " + json.dumps({k: v for k, v in cpu.items() if k != "busiest"}))
    machine = machine_info() | {"cpu_during_run": cpu, "busy_cores_while_waiting_for_quiet": quiet}
    report = {
        "benchmark": "realtime_latency",
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now().astimezone() - started).total_seconds(), 1),
        "url": "spawned" if args.spawn else args.url,
        "method": {
            "turns_per_session": args.turns,
            "barge_ins_per_session": args.barge_ins,
            "concurrent_sessions": args.sessions,
            "session_layout": "one Realtime session per --sessions; its turns run in a row in that session",
            "microphone": "100 ms pcm16 24 kHz chunks, each sent when its last sample is due; silence between",
            "speech_bounds": "energy > -40 dBFS in 20 ms frames, gaps < 0.45 s joined",
            "barge_in_after_first_audio_s": BARGE_IN_AFTER_S,
        },
        "machine": machine,
        "server": health,
        "summary_ms": summary,
        "checks": verdict,
        "sessions": [record.__dict__ for record in records],
    }
    path = harness.result_path(args.results, "realtime_latency", started)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if verdict["turns_ok"] and not verdict["turns_failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
