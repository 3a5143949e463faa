"""The benchmark client for the stock pipecat baseline (``benchmarks/baseline/pipecat_bot.py``).

It speaks pipecat's own client protocol (``wire.py``): protobuf frames over one WebSocket, an
RTVI ``client-ready`` message first, then microphone audio; ``server.py`` runs the bot. The audio is the
same clips cosyagent's drivers speak, resampled to 16 kHz (pipecat's default input rate) and
sent as a live microphone would: a 20 ms frame once its last sample has been "spoken", silence
between utterances. Reply audio arrives paced to real time (pipecat's websocket output
transport sleeps one frame per frame), so a frame's arrival is when it plays.

Client-side times: speech start and end (where the clip's speech truly is in the stream), each
reply audio frame's arrival, the ``interruption`` frames. Server-side times (the bot's
``GET /timings/{session}``, ``time.monotonic()`` on the same clock): turn end, transcript,
reply start, the LLM's first token, Kokoro's first sentence and first audio. The reply starts
when the user aggregator hands the context with the final transcript to the LLM, as in
cosyagent; so ``end_of_turn_ms`` (speech end -> pipecat's UserStoppedSpeakingFrame) +
``asr_ms`` (-> the reply start: what was left of transcription when the turn ended) +
``tts_first_audio_ms`` (+ delivery) = ``voice_to_voice_ms``. ``first_clause_ms`` is the reply
start -> TTSStartedFrame, i.e. pipecat's sentence aggregator handing Kokoro its first sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from benchmarks.baseline.wire import (
    BaselineError,
    BotSocket,
    Microphone,
    Received,
    client_ready,
    message_frame,
    wire_pcm,
)
from benchmarks.records import BARGE_IN_AFTER_S, PLAYBACK_MARGIN_S, Plan, SessionRecord, session_order
from cosyagent.talk import Clip, elapsed_ms

logger = logging.getLogger(__name__)

QUIET_S = 0.2  # no reply audio for this long: time to ask the bot whether the reply is over
POLL_S = 1.0  # otherwise ask at most this often
_SAME_DECISION_S = 0.05


# --- the bot's stamps -------------------------------------------------------------------------------

Events = list[dict[str, Any]]


def _times(events: Events, name: str, after: float = -math.inf, until: float = math.inf) -> list[float]:
    return [float(e["t"]) for e in events if e["event"] == name and after < e["t"] <= until]


def _first(events: Events, name: str, after: float) -> float | None:
    found = _times(events, name, after)
    return found[0] if found else None


def _last(events: Events, name: str, after: float, until: float) -> float | None:
    found = _times(events, name, after, until)
    return found[-1] if found else None


def final_reply(events: Events, since: float, speech_end_at: float) -> float | None:
    """The start of the reply that answered the speech after ``since``, once the bot has
    synthesized all of it (``tts_done``, or ``reply_played``); None until then. An early reply
    (the turn ended at a pause and the user went on) is interrupted, and a later one answers."""
    start = _last(events, "reply_start", since, math.inf)
    if start is None:
        return None
    done = min([*_times(events, "tts_done", start), *_times(events, "reply_played", start)], default=None)
    if done is None or done <= speech_end_at or _times(events, "interruption", start, done):
        return None
    return start


class Timings:
    """The bot's stamps for one connection."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client, self._url = client, url
        self.last_event_at = -math.inf

    async def fetch(self) -> Events:
        response = await self._client.get(self._url)
        response.raise_for_status()
        events: Events = response.json()
        if events:
            self.last_event_at = max(self.last_event_at, float(events[-1]["t"]))
        return events


def _last_audio(received: Received, since: float) -> float | None:
    audio = received.audio_between(since)
    return audio[-1][0] if audio else None


def _quiet(received: Received, since: float) -> bool:
    """No audio of the reply since ``since`` for QUIET_S."""
    return time.monotonic() - (_last_audio(received, since) or since) >= QUIET_S


async def wait_reply(
    bot: BotSocket, timings: Timings, since: float, speech_end_at: float, idle_s: float
) -> tuple[Events, float] | None:
    """Wait until the bot has sent the whole reply to the speech after ``since``: (events, reply
    start), or None once neither the bot's stamps nor its audio have moved for ``idle_s``. The
    bot is asked once reply audio pauses for QUIET_S, or every POLL_S while none comes; the
    reply is over once it says nothing is left to synthesize and the audio has stopped."""
    asked = [0.0]

    def worth_asking() -> bool:
        now = time.monotonic()
        last = _last_audio(bot.received, since)
        quiet = last is not None and now - last >= QUIET_S and last > asked[0]
        return now > speech_end_at and (quiet or now - asked[0] >= POLL_S)

    def idle_deadline() -> float:
        activity = [speech_end_at, timings.last_event_at, _last_audio(bot.received, since) or -math.inf]
        return max(activity) + idle_s

    while time.monotonic() < idle_deadline():
        if not await bot.wait_for(worth_asking, min(idle_deadline(), time.monotonic() + POLL_S)):
            continue
        asked[0] = time.monotonic()
        events = await timings.fetch()
        start = final_reply(events, since, speech_end_at)
        if start is not None:
            await bot.wait_for(functools.partial(_quiet, bot.received, start), time.monotonic() + idle_s)
            return await timings.fetch(), start
    return None


def turn_metrics(
    events: Events, received: Received, since: float, speech_end_at: float, start: float
) -> dict[str, Any]:
    """The TURN_METRICS of the reply that started at ``start`` (see the module docstring). The
    user aggregator pushes the context to the LLM and then UserStoppedSpeakingFrame: one decision,
    so the turn ends at the earlier of the two."""
    stopped = _last(events, "user_stopped", since, start + _SAME_DECISION_S)
    turn_end = None if stopped is None else min(stopped, start)
    audio = received.audio_between(start)
    first_audio = audio[0][0] if audio else None
    ended = [e for e in events if e["event"] == "llm_ended" and start < e["t"]]
    return {
        "voice_to_voice_ms": elapsed_ms(speech_end_at, first_audio),
        "end_of_turn_ms": elapsed_ms(speech_end_at, turn_end),
        "asr_ms": elapsed_ms(turn_end, start),
        "llm_first_token_ms": elapsed_ms(start, _first(events, "llm_text", start)),
        "first_clause_ms": elapsed_ms(start, _first(events, "tts_started", start)),
        "tts_first_audio_ms": elapsed_ms(start, _first(events, "tts_audio", start)),
        "reply_stall_ms": None,  # not measured for the baseline
        "vad_stop_ms": elapsed_ms(speech_end_at, _last(events, "vad_stopped", since, turn_end or start)),
        "transcript_ms": elapsed_ms(speech_end_at, _last(events, "transcription", since, start)),
        "user_transcripts": [
            e.get("text", "") for e in events if e["event"] == "transcription" and since < e["t"] <= start
        ],
        "reply_text": str(ended[0].get("text", "")).strip()[:300] if ended else "",
        "reply_audio_s": round(sum(seconds for _, seconds in audio), 2),
        "early_replies": len(_times(events, "reply_start", since, start)) - 1,
    }


async def wait_playback(bot: BotSocket, start: float) -> None:
    """The user listens to the end of the reply that started at ``start``, plus PLAYBACK_MARGIN_S
    (audio arriving meanwhile extends it)."""
    while True:
        audio = bot.received.audio_between(start)
        ends = (audio[-1][0] + audio[-1][1] if audio else start) + PLAYBACK_MARGIN_S
        if time.monotonic() >= ends:
            return
        await asyncio.sleep(ends - time.monotonic())


# --- one conversation -----------------------------------------------------------------------------


@dataclass
class Conversation:
    bot: BotSocket
    mic: Microphone
    timings: Timings
    plan: Plan
    record: SessionRecord
    wire: dict[str, bytes]

    def speak(self, clip: Clip) -> tuple[float, float, float]:
        """Queue the clip; (stream start, speech start, speech end) in monotonic seconds."""
        at = self.mic.play(self.wire[clip.name])
        return at, at + clip.speech_start_s, at + clip.speech_end_s

    async def turn(self, clip: Clip) -> None:
        _, speech_start, speech_end = self.speak(clip)
        row: dict[str, Any] = {"clip": clip.name, "speech_s": round(clip.speech_end_s - clip.speech_start_s, 2)}
        reply = await wait_reply(self.bot, self.timings, speech_start, speech_end, self.plan.timeout_s)
        if reply is None:
            self.record.turns.append(row | {"ok": False, "timeline": await self._timeline(speech_end)})
            self.record.errors.append(f"turn on {clip.name}: the bot went quiet for {self.plan.timeout_s:g} s")
            return
        events, start = reply
        metrics = turn_metrics(events, self.bot.received, speech_start, speech_end, start)
        self.record.turns.append(row | {"ok": metrics["voice_to_voice_ms"] is not None} | metrics)
        await wait_playback(self.bot, start)

    async def barge_in(self, first: Clip, second: Clip) -> None:
        trial: dict[str, Any] = {"reply_clip": first.name, "barge_in_clip": second.name}
        _, speech_start, speech_end = self.speak(first)
        deadline = speech_end + self.plan.timeout_s
        received = self.bot.received

        def reply_audio() -> list[tuple[float, float]]:
            return received.audio_between(max([speech_end, *received.interruptions]))

        if not await self.bot.wait_for(lambda: bool(reply_audio()), deadline):
            self.record.errors.append(f"barge-in on {first.name}: no reply audio within {self.plan.timeout_s:g} s")
            self.record.barge_ins.append(trial | {"skipped": "no reply to interrupt"})
            return
        first_audio = reply_audio()[0][0]
        await asyncio.sleep(max(0.0, first_audio + BARGE_IN_AFTER_S - time.monotonic()))
        done = final_reply(await self.timings.fetch(), speech_start, speech_end)
        last = _last_audio(received, first_audio)
        if done is not None and last is not None and time.monotonic() - last >= QUIET_S:
            trial["skipped"] = "the reply ended before the barge-in"
            self.record.barge_ins.append(trial)
            await wait_playback(self.bot, done)
            return
        _, begin, end = self.speak(second)
        answer = await wait_reply(self.bot, self.timings, begin, end, self.plan.timeout_s)
        if answer is None:
            self.record.errors.append(f"barge-in with {second.name}: the bot went quiet for {self.plan.timeout_s:g} s")
            self.record.barge_ins.append(trial | {"skipped": "no answer", "timeline": await self._timeline(end)})
            return
        events, start = answer
        trial |= barge_in_metrics(events, received, first_audio, begin, end, start)
        trial["answer"] = turn_metrics(events, received, begin, end, start)
        self.record.barge_ins.append(trial)
        await wait_playback(self.bot, start)

    async def _timeline(self, origin: float) -> list[str]:
        """The bot's stamps and the client's interruptions, relative to ``origin`` (for failures)."""
        with contextlib.suppress(httpx.HTTPError):
            events = await self.timings.fetch()
            rows = [(float(e["t"]), e["event"]) for e in events if e["t"] > origin - 30.0]
            rows += [(at, "client: interruption") for at in self.bot.received.interruptions if at > origin - 30.0]
            return [f"{at - origin:+.3f} {name}" for at, name in sorted(rows)]
        return []


def barge_in_metrics(
    events: Events, received: Received, first_audio: float, begin: float, end: float, answer_start: float
) -> dict[str, Any]:
    """How fast the interrupted reply's audio stopped, and the answer's voice-to-voice.

    The interrupted reply's audio is told from the answer's by pipecat's ``interruption`` frame:
    the output transport drops its queued audio and sends that frame to the client (so that a
    client flushes its playback buffer) before the answer can exist, since the answer only starts
    when the interrupting turn ends. Audio before the first interruption after the interrupting
    speech began is the old reply's; the last such frame is where it stopped."""
    interruption = next((at for at in received.interruptions if at > begin), None)
    answer_audio = received.audio_between(answer_start)
    row: dict[str, Any] = {
        "voice_to_voice_after_barge_in_ms": elapsed_ms(end, answer_audio[0][0] if answer_audio else None),
        "interruption_at_client_ms": elapsed_ms(begin, interruption),
        "interruption_at_bot_ms": elapsed_ms(begin, _first(events, "interruption", begin)),
    }
    if interruption is None or (answer_audio and answer_audio[0][0] < interruption):
        return row | {"skipped": "the reply ended before the barge-in interrupted it"}
    old = received.audio_between(first_audio - 1e-6, interruption)
    if not old or old[-1][0] <= begin:
        return row | {"skipped": "no reply audio was arriving when the barge-in began"}
    return row | {"barge_in_stop_ms": elapsed_ms(begin, old[-1][0])}


async def run_session(url: str, index: int, clips: list[Clip], plan: Plan) -> SessionRecord:
    """One conversation with a fresh pipeline of the bot at ``url`` (``http://host:port``)."""
    record = SessionRecord(index)
    order = session_order(clips, index, plan)
    session = f"{index}-{uuid.uuid4().hex[:8]}"
    ws_url = url.replace("http://", "ws://", 1).rstrip("/") + f"/ws?session={session}"
    try:
        async with (
            httpx.AsyncClient(timeout=10.0) as client,
            websockets.connect(ws_url, open_timeout=plan.timeout_s, max_size=None) as ws,
        ):
            bot = BotSocket(ws)
            bot.start()
            mic = Microphone(bot)
            conversation = Conversation(
                bot, mic, Timings(client, f"{url.rstrip('/')}/timings/{session}"), plan, record,
                {clip.name: wire_pcm(clip) for clip in order},
            )  # fmt: skip
            try:
                await ws.send(message_frame(client_ready()))
                ready = lambda: any(kind == "bot-ready" for _, kind in bot.received.messages)  # noqa: E731
                if not await bot.wait_for(ready, time.monotonic() + plan.timeout_s):
                    raise BaselineError(f"no bot-ready within {plan.timeout_s:g} s")
                mic.start()
                await asyncio.sleep(1.0)  # the microphone is open before anyone speaks
                for clip in order[: plan.turns]:
                    await conversation.turn(clip)
                pairs = order[plan.turns :]
                for first, second in zip(pairs[::2], pairs[1::2], strict=True):
                    await conversation.barge_in(first, second)
            finally:
                if mic.max_send_lag_s > 0.1:
                    logger.warning(
                        "baseline session %d: the microphone lagged up to %.0f ms", index, mic.max_send_lag_s * 1e3
                    )
                await mic.aclose()
                await bot.aclose()
    except (
        BaselineError,
        OSError,
        TimeoutError,
        InvalidHandshake,
        InvalidURI,
        ConnectionClosed,
        httpx.HTTPError,
    ) as exc:
        record.errors.append(f"session {index}: {type(exc).__name__}: {exc}")
        logger.error("baseline session %d: %s", index, exc)
    return record
