"""The cosyagent driver over the Realtime WebSocket, through the official ``openai`` SDK.

A simulated microphone (:class:`cosyagent.talk.Microphone`: 100 ms pcm16 chunks at 24 kHz, each
sent when its last sample has been "spoken", silence between utterances) says the clips; every
time is taken at the client when the event arrives. What each metric means: benchmarks/records.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from openai.types.realtime import (
    InputAudioBufferSpeechStartedEvent,
    RealtimeErrorEvent,
    ResponseAudioDeltaEvent,
    ResponseDoneEvent,
)

from benchmarks.records import (
    ADMISSION_REFUSALS,
    BARGE_IN_AFTER_S,
    PLAYBACK_MARGIN_S,
    Plan,
    SessionRecord,
    compact_timeline,
    cosyagent_turn,
    log_turn,
    session_order,
)
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
)

logger = logging.getLogger(__name__)


# --- one conversation ------------------------------------------------------------------------------


def _turn_record(clip: Clip, result: TurnResult, mic: Microphone, ok: bool) -> dict[str, Any]:
    stream_end_ms = (result.speech_end_at - mic.started_at) * 1000.0
    return cosyagent_turn(clip, result, ok) | {
        "reply_audio_s": round(result.reply_audio_s, 2),
        "first_audio_after_response_created_ms": elapsed_ms(result.created_at, result.first_audio_at),
        "server_vad_end_lag_ms": None
        if result.vad_audio_end_ms is None
        else round(result.vad_audio_end_ms - stream_end_ms, 1),
        "late_audio_deltas": result.late_audio_deltas,
        "reply_stall_ms": round(result.stall_ms, 1),
    }


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
        self.last_audio_at: float | None = None
        self.deltas_after_done = 0

    def feed(self, at: float, event: object) -> None:
        if isinstance(event, InputAudioBufferSpeechStartedEvent) and self.speech_started_at is None:
            self.speech_started_at = at
        elif isinstance(event, ResponseAudioDeltaEvent) and event.response_id == self.response_id:
            if self.done_at is not None:
                self.deltas_after_done += 1
            elif self.speech_started_at is not None:
                self.audio_after_speech_started_ms += len(event.delta) * 3 / 4 / 2 / RATE * 1000.0
                self.last_audio_at = at
        elif isinstance(event, ResponseDoneEvent) and event.response.id == self.response_id:
            self.done_at, self.status = at, event.response.status
            details = event.response.status_details
            self.reason = details.reason if details is not None else None

    def record(self) -> dict[str, Any]:
        def ms(at: float | None) -> float | None:
            return None if at is None else round((at - self.speech_begin_at) * 1000.0, 1)

        return {
            # The client is told to stop (and no audio of the reply follows): response.done.
            "barge_in_stop_ms": ms(self.done_at),
            # The client stops playing on speech_started, unless reply audio still came after it.
            "barge_in_voice_stop_ms": ms(self.last_audio_at or self.speech_started_at),
            "response_status": self.status,
            "reason": self.reason,
            "speech_started_ms": ms(self.speech_started_at),
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
        trial["answer"]["timeline"] = compact_timeline(answer.result.timeline)
        await _wait_playback(events, answer)
    trial.update(probe.record())
    if trial["done_before_speech_started"]:
        trial["skipped"] = "the reply ended before speech_started"
    record.barge_ins.append(trial)


async def run_session(url: str, index: int, clips: list[Clip], plan: Plan) -> SessionRecord:
    """One Realtime conversation: ``plan.turns`` turns, then ``plan.barge_ins`` barge-in trials."""
    record = SessionRecord(index)
    order = session_order(clips, index, plan)
    asked_at = time.monotonic()
    try:
        async with connect(url, None) as conn:
            events = EventStream(conn)
            events.start()
            mic = Microphone(conn, keep_alive=True)
            try:
                if not await _admitted(events, record, asked_at):
                    logger.info("session %d: refused at admission: %s", index, record.refused)
                    return record
                mic.start()
                await asyncio.sleep(1.0)  # the microphone is open before anyone speaks
                for clip in order[: plan.turns]:
                    collector = await _speak_turn(events, mic, clip, plan.timeout_s, record)
                    if collector is not None:
                        record.turns.append(_turn_record(clip, collector.result, mic, ok=True))
                        await _wait_playback(events, collector)
                    log_turn(logger, index, record)
                pairs = order[plan.turns :]
                for first, second in zip(pairs[::2], pairs[1::2], strict=True):
                    await _barge_in(events, mic, first, second, plan.timeout_s, record)
                    log_barge_in(index, record)
            finally:
                record.mic_lagged(mic.max_send_lag_s)
                await mic.aclose()
                await events.aclose()
    except TalkError as exc:
        record.errors.append(str(exc))
        logger.error("session %d: %s", index, exc)
    return record


async def _admitted(events: EventStream, record: SessionRecord, asked_at: float) -> bool:
    """Wait for ``session.created``; False, with the record marked refused, when the server
    refuses the session at admission instead (an ``error`` event with a refusal code, then close
    1013). Any other ``error`` event raises :class:`TalkError`."""
    deadline = time.monotonic() + 10.0
    while True:
        item = await events.next(deadline)
        if isinstance(item.event, RealtimeErrorEvent):
            error = item.event.error
            if error.code in ADMISSION_REFUSALS:
                record.refuse(error.code, error.message, asked_at)
                return False
            raise TalkError(f"server error: {error.message}")
        if item.type == "session.created":
            return True


def log_barge_in(index: int, record: SessionRecord) -> None:
    trial = record.barge_ins[-1] if record.barge_ins else {}
    logger.info(
        "session %d barge-in %d: speech_started %s ms, response.done %s (%s) ms",
        index,
        len(record.barge_ins),
        trial.get("speech_started_ms"),
        trial.get("barge_in_stop_ms"),
        trial.get("response_status", trial.get("skipped")),
    )
