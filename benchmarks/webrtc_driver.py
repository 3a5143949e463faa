"""The cosyagent driver over WebRTC (``POST /v1/realtime/calls``), with an aiortc caller.

The caller (:mod:`benchmarks.webrtc_caller`) sends its microphone on an Opus track: 20 ms
frames at 48 kHz, each sent once its last sample has been "spoken", silence between
utterances. The agent's voice comes back on the remote track and the events on the
``oai-events`` data channel; every frame and event is stamped with ``time.monotonic()`` when
it arrives. The events are read by the same :class:`cosyagent.talk.TurnCollector` as over the
WebSocket (parsed as the ``openai`` SDK parses them), so end-of-turn, ASR and the server's
timings are measured by the same ruler. What differs is the reply audio, which is not in the
events: its first audio is the arrival of the first voiced frame on the remote track
(:data:`benchmarks.webrtc_caller.VOICE_RMS` says what "voiced" means), and a barge-in stops
the reply at the arrival of its last voiced frame. What each metric means: benchmarks/records.py.

The call starts with the server's session defaults (a raw ``application/sdp`` offer). A
server needs ``webrtc.max_calls`` at least the number of concurrent sessions (4 by default).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import soxr
from openai._models import construct_type_unchecked  # what the SDK's parse_event uses for WebSocket events
from openai.types.realtime import (
    InputAudioBufferSpeechStartedEvent,
    RealtimeServerEvent,
    ResponseCreatedEvent,
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
from benchmarks.webrtc_caller import FRAME_S, RATE, VOICE_RMS, Caller, CallRefused, dial, hang_up
from cosyagent.engines.vad import SileroVAD
from cosyagent.pipeline.turns import HOLD_AFTER_FRAMES
from cosyagent.talk import RATE as CLIP_RATE
from cosyagent.talk import Clip, Stamped, TurnCollector, elapsed_ms

logger = logging.getLogger(__name__)

SETUP_TIMEOUT_S = 20.0  # offer/answer and the data channel opening
NO_AUDIO_AFTER_DONE_S = 2.0  # a completed reply whose audio has not begun by then has none
PLAYED_OUT_SLACK_S = 0.5  # after output_audio_buffer.stopped, its last frames are still arriving
# The server pauses a reply's track (the hold, before the cut) once HOLD_AFTER_FRAMES VAD frames
# of the speech over it have come in; the onset may fall anywhere in the first of them, so the
# voice can stop as soon as one frame (32 ms) after the onset. A voice that stopped sooner stopped
# for another reason (a pause, synthesis behind). Two frames (64 ms) once counted real holds
# that stopped 32-64 ms after the onset as pauses.
HEARD_AFTER_MS = 1000.0 * (HOLD_AFTER_FRAMES - 1) * SileroVAD.frame_samples / SileroVAD.sample_rate


def parse_event(event: dict[str, Any]) -> RealtimeServerEvent:
    """A data channel event as the SDK's typed event (``AsyncRealtimeConnection.parse_event``)."""
    return cast(RealtimeServerEvent, construct_type_unchecked(value=event, type_=cast(Any, RealtimeServerEvent)))


def track_audio(clip: Clip) -> npt.NDArray[np.float32]:
    """The clip at the track's 48 kHz (soxr keeps the timing: sample positions do not shift)."""
    return np.asarray(soxr.resample(clip.samples, CLIP_RATE, RATE), dtype=np.float32)


class Conversation:
    """One call's events, read in order by the collectors of the turn at hand."""

    def __init__(self, caller: Caller, timeout_s: float) -> None:
        self.caller = caller
        self.timeout_s = timeout_s
        self._cursor = 0  # events before it were read by earlier turns
        self.playback: dict[tuple[str, str], float] = {}  # (started|stopped|cleared, response id) -> arrival

    def say(self, clip: Clip) -> float:
        """Start saying ``clip`` (the events so far belong to earlier turns); when it starts."""
        self.pump_now([])
        return self.caller.microphone.say(track_audio(clip))

    def pump_now(self, feeders: list[Callable[[Stamped], object]]) -> float | None:
        """Feed the events that came so far; the arrival of the last one, if any."""
        last = None
        events = self.caller.events
        while self._cursor < len(events):
            at, raw = events[self._cursor]
            self._cursor += 1
            last = at
            kind = str(raw.get("type", ""))
            if kind.startswith("output_audio_buffer."):
                self.playback.setdefault((kind.rsplit(".", 1)[1], str(raw.get("response_id"))), at)
            item = Stamped(at, parse_event(raw))
            for feed in feeders:
                feed(item)
        return last

    async def pump(
        self, feeders: list[Callable[[Stamped], object]], done: Callable[[], bool], until: float = math.inf
    ) -> None:
        """Feed events until ``done()`` or the time ``until``. ``TimeoutError`` when no event has
        come for ``timeout_s`` (the remote track's frames keep coming, so this loop wakes every
        20 ms); :class:`cosyagent.talk.TalkError` on an error event."""
        quiet_since = time.monotonic()
        while True:
            last = self.pump_now(feeders)
            if last is not None:
                quiet_since = max(quiet_since, last)
            if done():
                return
            now = time.monotonic()
            if now >= until:
                return
            if now >= quiet_since + self.timeout_s:
                raise TimeoutError
            await self.caller.news(min(until, quiet_since + self.timeout_s))

    async def reply_audio(self, feeders: list[Callable[[Stamped], object]], collector: TurnCollector) -> None:
        """After the reply completed: wait for its first voiced frame and set ``first_audio_at``
        (stays None when the reply has no audio above the threshold)."""
        result = collector.result
        created, response = result.created_at or 0.0, str(result.response_id)

        def found() -> bool:
            result.first_audio_at = self.caller.first_voice(after=created)
            if result.first_audio_at is not None:
                return True
            now = time.monotonic()
            stopped = self.playback.get(("stopped", response))
            if stopped is not None:
                return now > stopped + PLAYED_OUT_SLACK_S
            return ("started", response) not in self.playback and now > (result.done_at or 0.0) + NO_AUDIO_AFTER_DONE_S

        await self.pump(feeders, found)

    async def played_out(
        self, feeders: list[Callable[[Stamped], object]], collector: TurnCollector
    ) -> dict[str, float]:
        """Wait until the reply has played out at the client, plus PLAYBACK_MARGIN_S; returns
        how much of it was heard."""
        result = collector.result
        response = str(result.response_id)
        if result.first_audio_at is None:
            await self.pump(feeders, lambda: False, until=(result.done_at or time.monotonic()) + PLAYBACK_MARGIN_S)
            return {"reply_audio_s": 0.0, "reply_playout_s": 0.0}
        await self.pump(feeders, lambda: ("stopped", response) in self.playback)
        end = self.playback[("stopped", response)] + PLAYED_OUT_SLACK_S
        await self.pump(feeders, lambda: False, until=end)
        last = self.caller.last_voice(after=result.first_audio_at, before=end) or result.first_audio_at
        await self.pump(feeders, lambda: False, until=last + FRAME_S + PLAYBACK_MARGIN_S)
        return {
            "reply_audio_s": round(self.caller.voiced_seconds(result.first_audio_at, end, VOICE_RMS), 2),
            # first to last voiced frame: longer than reply_audio_s by the reply's pauses, and by
            # gaps where the server's synthesis fell behind real time
            "reply_playout_s": round(last + FRAME_S - result.first_audio_at, 2),
        }


def turn_row(clip: Clip, collector: TurnCollector, ok: bool, playback: dict[tuple[str, str], float]) -> dict[str, Any]:
    result = collector.result
    return cosyagent_turn(clip, result, ok) | {
        "first_audio_after_response_created_ms": elapsed_ms(result.created_at, result.first_audio_at),
        # output_audio_buffer.started arrives on the data channel as the server's track sends
        # the first frame; minus the first voiced frame's arrival: the media path's extra delay.
        "first_audio_after_output_started_ms": elapsed_ms(
            playback.get(("started", str(result.response_id))), result.first_audio_at
        ),
    }


async def speak_turn(talk: Conversation, clip: Clip, record: SessionRecord) -> None:
    """One turn: say ``clip``, wait for the complete reply, its first audio, and its playing out."""
    start = talk.say(clip)
    collector = TurnCollector(start + clip.speech_end_s)
    feeders: list[Callable[[Stamped], object]] = [collector.feed]
    try:
        await talk.pump(feeders, lambda: collector.complete)
        await talk.reply_audio(feeders, collector)
    except TimeoutError:
        record.turns.append(turn_row(clip, collector, False, talk.playback))
        record.errors.append(f"turn on {clip.name}: no event for {talk.timeout_s:g} s before the reply ended")
        return
    row = turn_row(clip, collector, True, talk.playback)
    record.turns.append(row)
    row.update(await talk.played_out(feeders, collector))


class BargeInProbe:
    """The interrupted reply: when the server saw the new speech, cancelled the reply and
    cleared the track (data channel arrivals), and when its voice stopped on the track."""

    def __init__(self, response_id: str, speech_begin_at: float) -> None:
        self.response_id = response_id
        self.speech_begin_at = speech_begin_at
        self.speech_started_at: float | None = None
        self.done_at: float | None = None
        self.status: str | None = None
        self.reason: str | None = None
        self.answer_created_at: float | None = None  # the next response: the track is silent until then

    def feed(self, item: Stamped) -> None:
        event, at = item.event, item.at
        if isinstance(event, InputAudioBufferSpeechStartedEvent) and self.speech_started_at is None:
            self.speech_started_at = at
        elif isinstance(event, ResponseDoneEvent) and event.response.id == self.response_id:
            self.done_at, self.status = at, event.response.status
            details = event.response.status_details
            self.reason = details.reason if details is not None else None
        elif isinstance(event, ResponseCreatedEvent) and self.answer_created_at is None:
            self.answer_created_at = at

    def record(self, caller: Caller, first_audio_at: float, cleared_at: float | None) -> dict[str, Any]:
        end = self.answer_created_at or time.monotonic()
        stop_at = caller.last_voice(after=first_audio_at, before=end)
        cut_at = cleared_at or self.done_at  # when the server's cut reached us on the data channel

        def ms(at: float | None) -> float | None:
            return elapsed_ms(self.speech_begin_at, at)

        after_done = caller.voiced_seconds(self.done_at, end, VOICE_RMS) if self.done_at else 0.0
        return {
            # The interrupting speech begins -> the last voiced frame of the reply arrives.
            "barge_in_stop_ms": ms(stop_at),
            "barge_in_voice_stop_ms": ms(stop_at),  # the caller hears the track itself
            "response_done_ms": ms(self.done_at),  # the data channel's response.done (cancelled)
            "output_audio_cleared_ms": ms(cleared_at),
            "speech_started_ms": ms(self.speech_started_at),
            "response_status": self.status,
            "reason": self.reason,
            # > 0: the voice stopped before the cut reached us: the server's hold, which pauses the
            # track on the speech's first frames, 32 ms before it is called a turn and cut
            "quiet_before_cut_ms": elapsed_ms(None if stop_at is None else stop_at + FRAME_S, cut_at),
            "reply_voice_after_response_done_ms": round(1000.0 * after_done, 1),  # should be ~0
            "done_before_speech_started": self.done_at is not None
            and (self.speech_started_at is None or self.done_at < self.speech_started_at),
        }


async def barge_in(talk: Conversation, first: Clip, second: Clip, record: SessionRecord) -> None:
    """Say ``first``; BARGE_IN_AFTER_S into its reply's voice, say ``second`` over it."""
    start = talk.say(first)
    reply = TurnCollector(start + first.speech_end_s)
    result = reply.result

    def ended() -> bool:  # the latest response is done (completed, or cancelled by the clip itself)
        return result.created_at is not None and result.done_at is not None and result.done_at >= result.created_at

    def reply_voice() -> bool:
        if result.created_at is not None and not ended():
            result.first_audio_at = talk.caller.first_voice(after=result.created_at)
        return result.first_audio_at is not None or reply.complete

    try:
        await talk.pump([reply.feed], reply_voice)
        if result.first_audio_at is None:  # completed before any voice was heard
            await talk.reply_audio([reply.feed], reply)
        if result.first_audio_at is not None:
            await talk.pump([reply.feed], lambda: False, until=result.first_audio_at + BARGE_IN_AFTER_S)
    except TimeoutError:
        record.errors.append(f"barge-in on {first.name}: no event for {talk.timeout_s:g} s")
        return
    trial: dict[str, Any] = {"reply_clip": first.name, "barge_in_clip": second.name}
    if ended() or result.response_id is None or result.first_audio_at is None:
        trial["skipped"] = "the reply ended before the barge-in"
        record.barge_ins.append(trial)
        if reply.complete:
            await talk.played_out([reply.feed], reply)
        return
    interrupt_at = talk.say(second)
    probe = BargeInProbe(result.response_id, interrupt_at + second.speech_start_s)
    answer = TurnCollector(interrupt_at + second.speech_end_s)
    feeders: list[Callable[[Stamped], object]] = [probe.feed, answer.feed]
    try:
        await talk.pump(feeders, lambda: answer.complete)
        await talk.reply_audio(feeders, answer)
    except TimeoutError:
        record.errors.append(f"barge-in with {second.name}: no event for {talk.timeout_s:g} s")
        trial["answer"] = turn_row(second, answer, False, talk.playback)
    else:
        trial["voice_to_voice_after_barge_in_ms"] = answer.result.voice_to_voice_ms
        trial["answer"] = turn_row(second, answer, True, talk.playback)
        trial["answer"]["timeline"] = compact_timeline(answer.result.timeline)
    trial.update(probe.record(talk.caller, result.first_audio_at, talk.playback.get(("cleared", result.response_id))))
    if trial["done_before_speech_started"]:
        trial["skipped"] = "the reply ended before speech_started"
    elif probe.status != "cancelled":
        trial["skipped"] = f"the reply was not cut off (its response.done: {probe.status})"
    elif trial["barge_in_stop_ms"] is None or trial["barge_in_stop_ms"] <= 0:
        trial["skipped"] = "the reply was quiet when the interrupting speech began"
    elif trial["barge_in_stop_ms"] < HEARD_AFTER_MS:
        trial["skipped"] = "the reply's voice stopped before the server could hear the speech (a pause?)"
    record.barge_ins.append(trial)
    if answer.complete:
        trial["answer"].update(await talk.played_out(feeders, answer))


async def run_session(url: str, index: int, clips: list[Clip], plan: Plan) -> SessionRecord:
    """One call: ``plan.turns`` turns, then ``plan.barge_ins`` barge-in trials. Never raises
    (but for cancellation): what went wrong is in ``record.errors``."""
    record = SessionRecord(index)
    order = session_order(clips, index, plan)
    caller: Caller | None = None
    asked_at = time.monotonic()
    try:
        try:
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                caller = await dial(url, timeout_s=SETUP_TIMEOUT_S)
                await caller.wait_for("session.created", timeout=SETUP_TIMEOUT_S)
        except TimeoutError as exc:
            raise CallRefused(f"the call was not up (session.created) within {SETUP_TIMEOUT_S:g} s") from exc
        except CallRefused as exc:
            if exc.code not in ADMISSION_REFUSALS:
                raise
            record.refuse(exc.code, str(exc), asked_at)
            logger.info("session %d: refused at admission: %s", index, record.refused)
            return record
        talk = Conversation(caller, plan.timeout_s)
        await asyncio.sleep(1.0)  # the microphone is open before anyone speaks
        for clip in order[: plan.turns]:
            await speak_turn(talk, clip, record)
            log_turn(logger, index, record)
        pairs = order[plan.turns :]
        for first, second in zip(pairs[::2], pairs[1::2], strict=True):
            await barge_in(talk, first, second, record)
            log_barge_in(index, record)
    except Exception as exc:  # noqa: BLE001 - a driver reports, it never raises (the bench runs the others on)
        record.errors.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        logger.error("session %d: %s", index, record.errors[-1])
    finally:
        if caller is not None:
            await _hang_up(url, caller, record)
    return record


async def _hang_up(url: str, caller: Caller, record: SessionRecord) -> None:
    """Hang up (so the server frees the call now), then close our peer connection."""
    try:
        if caller.call_id:
            await hang_up(url, caller.call_id)
    except Exception as exc:  # noqa: BLE001 - the call still ends when our peer connection closes
        record.errors.append(f"hangup: {type(exc).__name__}: {exc}")
    finally:
        await caller.close()


def log_barge_in(index: int, record: SessionRecord) -> None:
    trial = record.barge_ins[-1] if record.barge_ins else {}
    logger.info(
        "session %d barge-in %d: audio stopped %s ms, response.done %s (%s) ms",
        index,
        len(record.barge_ins),
        trial.get("barge_in_stop_ms"),
        trial.get("response_done_ms"),
        trial.get("response_status", trial.get("skipped")),
    )
