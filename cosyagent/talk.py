"""`cosyagent talk`: a Realtime API client that speaks a WAV file to a server, like a microphone.

The pieces are reusable (the latency benchmark imports them):

- :func:`load_clip` reads any WAV as 24 kHz mono and finds where the speech in it begins and
  ends (by energy), so latency is measured from the true end of speech, not from the end of
  the file.
- :class:`Microphone` streams audio the way a live microphone does: a 100 ms chunk is sent
  once its last sample has been "recorded" by the wall clock; sample ``n`` of the stream is
  spoken at ``start + n / 24000``.
- :class:`EventStream` reads server events in a task and stamps each with its arrival time.
- :class:`TurnCollector` is a sans-I/O state machine that turns the stamped events of one
  user turn into a :class:`TurnResult`; :func:`collect_turn` drives it.

Only the official ``openai`` SDK talks to the server; nothing here imports the server side.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr
from openai import AsyncOpenAI, OpenAIError
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionFailedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    RealtimeServerEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
)
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

logger = logging.getLogger(__name__)

Samples = npt.NDArray[np.float32]

RATE = 24000  # the Realtime API's default audio/pcm rate
CHUNK_S = 0.1
CHUNK_SAMPLES = int(RATE * CHUNK_S)
TRAILING_SILENCE_S = 2.0  # sent after the clip so that server VAD ends the turn
MODEL = "cosyagent-realtime"  # the server accepts any model name
SPEECH_THRESHOLD_DBFS = -40.0  # 20 ms frames louder than this are speech (room noise is -45..-65)


class TalkError(Exception):
    """A failure worth one clear line to the user (bad file, unreachable server, error event)."""


# --- audio -----------------------------------------------------------------------------------


def speech_segments(
    samples: Samples,
    rate: int,
    *,
    threshold_dbfs: float = SPEECH_THRESHOLD_DBFS,
    min_gap_s: float = 0.45,
    min_speech_s: float = 0.25,
    frame_s: float = 0.02,
) -> list[tuple[float, float]]:
    """(start, end) seconds of the speech in ``samples``: loud frames joined across gaps
    shorter than ``min_gap_s``; runs shorter than ``min_speech_s`` (clicks, a clipped word
    onset at the very end of a cut) are dropped."""
    width = max(1, int(rate * frame_s))
    frames = samples.size // width
    if frames == 0:
        return []
    power = np.mean(samples[: frames * width].astype(np.float64).reshape(frames, width) ** 2, axis=1)
    loud = np.flatnonzero(10.0 * np.log10(power + 1e-12) > threshold_dbfs)
    segments: list[tuple[float, float]] = []
    if loud.size == 0:
        return segments
    start = previous = int(loud[0])
    for index in (int(i) for i in loud[1:]):
        if (index - previous - 1) * frame_s >= min_gap_s:
            segments.append((start * frame_s, (previous + 1) * frame_s))
            start = index
        previous = index
    segments.append((start * frame_s, (previous + 1) * frame_s))
    return [(a, b) for a, b in segments if b - a >= min_speech_s]


@dataclass(frozen=True)
class Clip:
    """24 kHz mono speech and where the speech lies in it (seconds from the clip start)."""

    samples: Samples
    speech_start_s: float
    speech_end_s: float
    name: str = "clip"

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.size == 0:
            raise ValueError("a clip needs mono, non-empty audio")
        if not 0.0 <= self.speech_start_s <= self.speech_end_s <= self.duration_s + 1e-6:
            raise ValueError(f"speech bounds {self.speech_start_s}..{self.speech_end_s} outside the clip")

    @property
    def duration_s(self) -> float:
        return self.samples.size / RATE

    def pcm16(self) -> bytes:
        return (np.clip(self.samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()

    @classmethod
    def from_audio(cls, samples: Samples, rate: int, name: str = "clip") -> Clip:
        """Resample to 24 kHz and locate the speech (the whole clip when none is found)."""
        mono = np.asarray(samples, dtype=np.float32)
        audio = mono if rate == RATE else np.asarray(soxr.resample(mono, rate, RATE), dtype=np.float32)
        segments = speech_segments(audio, RATE, min_speech_s=0.08)  # a word onset cut at the end counts
        start, end = (segments[0][0], segments[-1][1]) if segments else (0.0, audio.size / RATE)
        return cls(audio, start, min(end, audio.size / RATE), name)


def load_clip(path: str) -> Clip:
    """Read a WAV (any rate, any channel count) as a 24 kHz mono :class:`Clip`."""
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, ValueError) as exc:  # soundfile's errors are RuntimeErrors
        raise TalkError(f"cannot read {path!r} as audio: {exc}") from exc
    if audio.shape[0] == 0:
        raise TalkError(f"{path!r} holds no audio")
    return Clip.from_audio(audio.mean(axis=1), int(rate), name=os.path.basename(path))


def silence(seconds: float) -> bytes:
    return bytes(2 * int(RATE * seconds))


# --- the connection ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connect(url: str, api_key: str | None, timeout_s: float = 10.0) -> AsyncIterator[AsyncRealtimeConnection]:
    """Open a Realtime connection to ``url`` (the server's base URL, e.g. ``http://host:8188/v1``)."""
    client = AsyncOpenAI(base_url=url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unused")
    try:
        try:
            async with asyncio.timeout(timeout_s):
                conn = await client.realtime.connect(model=MODEL).enter()
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise TalkError(f"the server at {url} refused the realtime connection (HTTP {status})") from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, OpenAIError) as exc:
            raise TalkError(f"cannot reach a realtime server at {url}: {exc or type(exc).__name__}") from exc
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await client.close()


@dataclass(frozen=True)
class Stamped:
    """A server event and its arrival time (``time.monotonic()``)."""

    at: float
    event: RealtimeServerEvent

    @property
    def type(self) -> str:
        return str(getattr(self.event, "type", ""))


class EventStream:
    """Reads server events in a task, stamping each on arrival, so that a slow consumer
    doesn't skew the times. ``next`` is cancel-safe: an event is never lost by a timeout."""

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[Stamped | TalkError] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name="realtime-events")

    async def _read(self) -> None:
        try:
            async for event in self._conn:
                self._queue.put_nowait(Stamped(time.monotonic(), event))
            self._queue.put_nowait(TalkError("the server closed the connection"))
        except (ConnectionClosed, OpenAIError, OSError) as exc:
            self._queue.put_nowait(TalkError(f"the connection to the server was lost: {exc}"))

    async def next(self, deadline: float) -> Stamped:
        """The next event; :class:`TalkError` when the connection ends, ``TimeoutError`` at ``deadline``."""
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            item = await self._queue.get()
        if isinstance(item, TalkError):
            self._queue.put_nowait(item)  # every later call fails the same way
            raise item
        return item

    async def expect(self, event_type: str, deadline: float) -> Stamped:
        """Skip events until one of ``event_type``; an ``error`` event raises :class:`TalkError`."""
        while True:
            item = await self.next(deadline)
            if isinstance(item.event, RealtimeErrorEvent):
                raise TalkError(f"server error: {item.event.error.message}")
            if item.type == event_type:
                return item

    async def aclose(self) -> None:
        await _cancel(self._task)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves: never swallow that


class Microphone:
    """Streams audio as a live microphone would: chunk ``i`` (100 ms) is sent at
    ``start + (i + 1) * 0.1`` s, when its last sample has been spoken. With ``keep_alive``
    it sends silence while nothing is queued; otherwise it sends nothing then."""

    def __init__(self, conn: AsyncRealtimeConnection, *, keep_alive: bool) -> None:
        self._conn = conn
        self._keep_alive = keep_alive
        self._t0 = 0.0
        self._next_chunk = 0  # the chunk to send next; the queue starts at its first sample
        self._queue = bytearray()
        self._task: asyncio.Task[None] | None = None
        self.max_send_lag_s = 0.0  # the latest a chunk went out after its due time

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="microphone")

    def play(self, pcm16: bytes) -> float:
        """Queue 24 kHz pcm16 to be spoken from now on (after anything still queued); returns
        the wall-clock time (``time.monotonic()``) of its first sample in the stream."""
        if self._task is None:
            raise RuntimeError("start() the microphone first")
        queued_end = self._next_chunk * CHUNK_SAMPLES + len(self._queue) // 2
        start = max(math.ceil((time.monotonic() - self._t0) * RATE), queued_end)
        self._queue.extend(bytes(2 * (start - queued_end)))
        self._queue.extend(pcm16)
        return self._t0 + start / RATE

    @property
    def started_at(self) -> float:
        """The wall-clock time of the stream's sample 0 (the server's ``audio_*_ms`` origin)."""
        return self._t0

    async def _run(self) -> None:
        chunk_bytes = 2 * CHUNK_SAMPLES
        while True:
            due = self._t0 + (self._next_chunk + 1) * CHUNK_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            chunk = bytes(self._queue[:chunk_bytes])
            del self._queue[:chunk_bytes]
            self._next_chunk += 1
            if not chunk and not self._keep_alive:
                continue
            payload = base64.b64encode(chunk.ljust(chunk_bytes, b"\0")).decode()
            try:
                await self._conn.input_audio_buffer.append(audio=payload)
            except (ConnectionClosed, OpenAIError, OSError) as exc:
                logger.debug("microphone stopped: %s", exc)  # the event reader reports the closure
                return
            self.max_send_lag_s = max(self.max_send_lag_s, time.monotonic() - due)

    async def aclose(self) -> None:
        await _cancel(self._task)


# --- one user turn -------------------------------------------------------------------------------


def elapsed_ms(start: float | None, end: float | None) -> float | None:
    """Milliseconds from ``start`` to ``end`` (monotonic seconds); None if either is unknown."""
    return None if start is None or end is None else round((end - start) * 1000.0, 1)


@dataclass
class TurnResult:
    """What happened between the end of the user's speech and the reply that answered it.
    Times are ``time.monotonic()``; ``None`` when the event never came."""

    speech_end_at: float
    user_transcripts: list[str] = field(default_factory=list)
    response_id: str | None = None
    status: str | None = None  # of the final response: completed, cancelled or failed
    reply_text: str = ""
    first_clause_text: str = ""  # the reply's first transcript delta: the text of its first audio
    reply_pcm16: bytearray = field(default_factory=bytearray)
    stopped_at: float | None = None  # the speech_stopped that led to the reply
    vad_audio_end_ms: int | None = None  # its audio_end_ms (server's stream position)
    transcribed_at: float | None = None  # that item's transcription.completed
    created_at: float | None = None
    first_audio_at: float | None = None
    done_at: float | None = None
    server_timings_ms: dict[str, float] = field(default_factory=dict)
    interrupted_responses: list[str] = field(default_factory=list)  # cancelled ones before the reply
    late_audio_deltas: int = 0  # audio deltas of a response after its response.done (must stay 0)
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def voice_to_voice_ms(self) -> float | None:
        return elapsed_ms(self.speech_end_at, self.first_audio_at)

    @property
    def end_of_turn_ms(self) -> float | None:
        return elapsed_ms(self.speech_end_at, self.stopped_at)

    @property
    def asr_ms(self) -> float | None:
        return elapsed_ms(self.stopped_at, self.transcribed_at)

    @property
    def reply_audio_s(self) -> float:
        return len(self.reply_pcm16) / (2 * RATE)


class TurnCollector:
    """Feeds on stamped events until a response completes. A response cancelled on the way
    (speech in the clip interrupted it) is noted and the collector waits for the next one."""

    def __init__(self, speech_end_at: float) -> None:
        self.result = TurnResult(speech_end_at=speech_end_at)
        self._current: str | None = None
        self._done: set[str] = set()
        self._last_stop: tuple[float, str, int] | None = None
        self._transcribed: dict[str, float] = {}

    @property
    def complete(self) -> bool:
        return self.result.status == "completed"

    def feed(self, item: Stamped) -> bool:
        """Take one event; True once the turn's reply is complete. Error events raise. After
        completion, events are only checked for late audio (and kept in the timeline)."""
        result, event, at = self.result, item.event, item.at
        result.timeline.append((round(at - result.speech_end_at, 3), item.type))
        if isinstance(event, RealtimeErrorEvent):
            raise TalkError(f"server error: {event.error.message} ({event.error.code or event.error.type})")
        if self.complete:
            if isinstance(event, ResponseAudioDeltaEvent) and event.response_id in self._done:
                result.late_audio_deltas += 1
            return True
        if isinstance(event, InputAudioBufferSpeechStoppedEvent):
            self._last_stop = (at, event.item_id, event.audio_end_ms)
        elif isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent):
            result.user_transcripts.append(event.transcript)
            self._transcribed[event.item_id] = at
        elif isinstance(event, ConversationItemInputAudioTranscriptionFailedEvent):
            logger.warning("transcription failed: %s", event.error.message)
        elif isinstance(event, ResponseCreatedEvent):
            self._start(event.response.id or "", at)
        elif isinstance(event, ResponseAudioDeltaEvent):
            self._audio(event, at)
        elif isinstance(event, ResponseAudioTranscriptDeltaEvent) and event.response_id == self._current:
            result.first_clause_text = result.first_clause_text or event.delta
            result.reply_text += event.delta
        elif isinstance(event, ResponseDoneEvent):
            return self._finish(event, at)
        return False

    def _start(self, response_id: str, at: float) -> None:
        result = self.result
        self._current, result.response_id, result.created_at = response_id, response_id, at
        result.reply_text, result.first_clause_text, result.reply_pcm16 = "", "", bytearray()
        result.first_audio_at = None
        if self._last_stop is not None:
            result.stopped_at, stopped_item, result.vad_audio_end_ms = self._last_stop
            result.transcribed_at = self._transcribed.get(stopped_item)

    def _audio(self, event: ResponseAudioDeltaEvent, at: float) -> None:
        if event.response_id in self._done:
            self.result.late_audio_deltas += 1
        elif event.response_id == self._current:
            self.result.reply_pcm16.extend(base64.b64decode(event.delta))
            if self.result.first_audio_at is None:
                self.result.first_audio_at = at

    def _finish(self, event: ResponseDoneEvent, at: float) -> bool:
        response_id = event.response.id or ""
        self._done.add(response_id)
        if response_id != self._current:
            return False
        self._current = None
        result = self.result
        result.status, result.done_at = event.response.status, at
        if result.status != "completed":
            result.interrupted_responses.append(response_id)
            return False
        timings = (event.model_extra or {}).get("x_cosyagent_timings_ms") or {}
        result.server_timings_ms = {k: float(v) for k, v in timings.items() if isinstance(v, int | float)}
        return True


async def collect_turn(events: EventStream, speech_end_at: float, idle_timeout_s: float) -> TurnResult:
    """Collect events until a response completes; ``TimeoutError`` once the server has sent
    nothing for ``idle_timeout_s`` (a long reply is fine: its audio keeps arriving)."""
    collector = TurnCollector(speech_end_at)
    while not collector.feed(await events.next(time.monotonic() + idle_timeout_s)):
        pass
    return collector.result


# --- the command -----------------------------------------------------------------------------------


async def _talk(clip: Clip, args: argparse.Namespace) -> TurnResult:
    async with connect(args.url, args.api_key, timeout_s=min(10.0, args.timeout)) as conn:
        events = EventStream(conn)
        events.start()
        try:
            setup_deadline = time.monotonic() + min(10.0, args.timeout)
            await events.expect("session.created", setup_deadline)
            if args.voice:
                await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": args.voice}}})
                await events.expect("session.updated", setup_deadline)
            mic = Microphone(conn, keep_alive=False)
            mic.start()
            try:
                clip_at = mic.play(clip.pcm16() + silence(TRAILING_SILENCE_S))
                try:
                    return await collect_turn(events, clip_at + clip.speech_end_s, args.timeout)
                except TimeoutError as exc:
                    raise TalkError(f"no complete reply: the server sent nothing for {args.timeout:g} s") from exc
            finally:
                await mic.aclose()
        finally:
            await events.aclose()


def _print_report(result: TurnResult, out: str) -> None:
    for transcript in result.user_transcripts:
        print(f"you said: {transcript.strip()}")
    print(f"agent: {result.reply_text.strip()}")
    if result.interrupted_responses:
        print(f"note: {len(result.interrupted_responses)} earlier response(s) were cancelled by speech in the clip")
    print(f"reply audio: {result.reply_audio_s:.2f} s -> {out}")
    v2v = result.voice_to_voice_ms
    v2v_text = f"{v2v:.0f} ms (end of speech -> first reply audio)" if v2v is not None else "n/a"
    print(f"voice-to-voice: {v2v_text}")
    stages = [("end-of-turn detection", result.end_of_turn_ms), ("transcription", result.asr_ms)]
    print("  client: " + ", ".join(f"{name} {value:.0f} ms" for name, value in stages if value is not None))
    timings = result.server_timings_ms
    if timings:
        print("  server: " + ", ".join(f"{name.replace('_', ' ')} {value:.0f} ms" for name, value in timings.items()))


def run_talk(args: argparse.Namespace) -> int:
    """Entry point of ``cosyagent talk``; returns the exit status."""
    if args.timeout <= 0:
        print("cosyagent talk: --timeout must be positive", file=sys.stderr)
        return 2
    try:
        clip = load_clip(args.wav)
    except TalkError as exc:
        print(f"cosyagent talk: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_talk(clip, args))
    except TalkError as exc:
        print(f"cosyagent talk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        sf.write(args.out, np.frombuffer(bytes(result.reply_pcm16), dtype="<i2"), RATE, subtype="PCM_16")
    except (OSError, RuntimeError) as exc:
        print(f"cosyagent talk: cannot write {args.out!r}: {exc}", file=sys.stderr)
        return 1
    _print_report(result, args.out)
    return 0
