"""The asyncio side of one Realtime session: carries out what the sans-I/O core decides.

It runs ASR jobs and replies (:mod:`cosyagent.agent.session_replies`) as tasks it keeps
references to, and on exit cancels and awaits every one of them, so a client vanishing
mid-reply leaves nothing running. Events and the sink's instructions leave in the order the core decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cosyagent.agent.budget import TokenBucket
from cosyagent.agent.events import (
    Action,
    CancelResponse,
    CancelTranscribe,
    CancelTurnEnd,
    ClearAudio,
    DraftTranscribe,
    Event,
    FinishAudio,
    HoldAudio,
    PlayAudio,
    PredictTurnEnd,
    PrefetchReply,
    ProtocolError,
    ReadAhead,
    ResumeAudio,
    Send,
    SinkAction,
    StartResponse,
    Transcribe,
    server_error_event,
)
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session_replies import SessionReplies
from cosyagent.engines.base import (
    AudioF32,
    CancelToken,
    ChatLLM,
    EngineCancelled,
    EngineError,
    SpeechRecognizer,
    SpeechSynthesizer,
    TurnEndPredictor,
    UnsupportedLanguageError,
)
from cosyagent.engines.scheduling import needed_by
from cosyagent.pipeline.llm_prefetch import PrefetchingLLM, llm_request
from cosyagent.pipeline.playout import AudioSink, MediaAudioSink
from cosyagent.pipeline.session_asr import SessionASR
from cosyagent.telemetry import SessionObserver

logger = logging.getLogger(__name__)


Receive = Callable[[], Awaitable[str | bytes | None]]
"""Next client message, or None once the client is gone."""
SendEvent = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class SessionEngines:
    asr: SpeechRecognizer
    llm: ChatLLM
    tts: SpeechSynthesizer
    turn_end: TurnEndPredictor | None = None  # semantic_vad's model; without it, silence alone ends turns


class ClientTooFast(Exception):
    """The client kept sending events past its budget: the session ends."""


class RealtimeSession:
    def __init__(
        self,
        core: RealtimeCore,
        engines: SessionEngines,
        send: SendEvent,
        output_lead_ms: float,
        observer: SessionObserver | None = None,
        *,
        sink: AudioSink,
        reply_ahead: bool = True,  # send a reply's LLM request during the silence wait (PrefetchReply)
        # Whether the LLM may read a draft's prompt now, while the speaker talks (ReadAhead); None: never.
        read_ahead: Callable[[], bool] | None = None,
        greet: bool = False,  # open with a reply, as a client's response.create before anyone spoke would
    ) -> None:
        self.core = core
        self._greet = greet
        self._observer = observer  # telemetry: sees every event as it is queued to send
        self._engines = engines
        self._llm = PrefetchingLLM(engines.llm)
        self._asr = SessionASR(engines.asr, on_draft=self._drafted)
        self._room_to_read_ahead = read_ahead
        self._reply_ahead = reply_ahead
        self._send = send
        self._sink = sink
        self._outbox: asyncio.Queue[Event | SinkAction] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._transcribe_jobs: dict[str, tuple[asyncio.Task[None], CancelToken]] = {}
        self._turn_end_jobs: dict[str, tuple[asyncio.Task[None], CancelToken]] = {}
        self._responses: dict[str, asyncio.Task[None]] = {}
        self._replies = SessionReplies(core, self._llm, engines.tts, sink, output_lead_ms, self._execute, observer)
        self._ending = asyncio.Event()
        self.ended_by_server: str | None = None  # the error code :meth:`end` was given

    async def run(self, receive: Receive) -> None:
        """Serve until the client leaves, a send fails or :meth:`end` is called. Cancel-safe:
        cleans up either way."""
        writer = asyncio.create_task(self._write_loop(), name=f"{self.core.session_id}-writer")
        if self._observer is not None:
            self._observer.opened()
        try:
            self._execute(self.core.start())
            if self._greet:
                self._execute(self.core.receive({"type": "response.create"}))
            reader = asyncio.create_task(self._read_loop(receive), name=f"{self.core.session_id}-reader")
            ending = asyncio.create_task(self._until_ended(), name=f"{self.core.session_id}-ending")
            self._tasks.update((reader, ending))
            done, _ = await asyncio.wait({reader, writer, ending}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    logger.info("session %s ended: %r", self.core.session_id, exc)
            if ending in done:
                await self._drain_outbox()  # the client learns why before the socket closes
        finally:
            if self._observer is not None:
                self._observer.closed()
            self._execute(self.core.close())
            writer.cancel()
            await self._cancel_all(writer)

    async def _until_ended(self) -> None:
        await self._ending.wait()

    def end(self, message: str, code: str) -> None:
        """End the session from the server's side (it is shutting down): a reply in progress
        fails with this error (``response.done`` status ``failed``) and stops; with none, an
        ``error`` event says why. :meth:`run` then returns once those events are sent (at
        most 1 s). Idempotent."""
        if self.ended_by_server is not None:
            return
        self.ended_by_server = code
        told = False
        for response_id, task in list(self._responses.items()):
            actions = self.core.response_failed(response_id, message, code)
            told = told or bool(actions)
            self._execute(actions)
            task.cancel()
        if not told:
            self._execute([Send(server_error_event(message, code))])
        self._ending.set()

    def append_audio(self, data: bytes) -> None:
        """Raw input audio in the session's input format, from a media stream rather than
        ``input_audio_buffer.append`` events. Call it while :meth:`run` is running; what
        the core decides is carried out as for any event."""
        self._execute(self.core.append_audio(data))
        self._replies.wake_playouts()  # the audio may have released held reply audio

    def append_samples(self, samples: AudioF32) -> None:
        """Input audio as 16 kHz floats (the WebRTC microphone, resampled once); else as
        :meth:`append_audio`."""
        self._execute(self.core.append_samples(samples))
        self._replies.wake_playouts()

    async def _read_loop(self, receive: Receive) -> None:
        rate = self.core.limits.max_events_per_second
        budget, refused = TokenBucket(rate, 2 * rate), 0
        while (message := await receive()) is not None:
            if not budget.spend(1):
                refused += 1
                if refused == 1 or refused >= 2 * rate:  # told once; a client that keeps on is let go
                    self._refuse_event_rate(rate, closing=refused >= 2 * rate)
                if refused >= 2 * rate:
                    await self._drain_outbox()  # the client learns why before the socket closes
                    raise ClientTooFast(f"over {rate:g} events per second, {refused} events refused in a row")
                continue  # dropped unread: the flood costs no parsing
            refused = 0
            self._execute(self.core.receive(message))
            self._replies.wake_playouts()  # a client event may have released held reply audio

    async def _drain_outbox(self, timeout_s: float = 1.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), timeout_s)

    def _refuse_event_rate(self, rate: float, *, closing: bool) -> None:
        what = "the session is closing" if closing else "events past the limit are dropped"
        message = f"client events are arriving faster than {rate:g} per second: {what}"
        self._execute([Send(ProtocolError(message, code="rate_limit_exceeded").to_event())])

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                if isinstance(item, dict):
                    await self._send(item)
                else:
                    self._instruct_sink(item)
            finally:
                self._outbox.task_done()

    def _instruct_sink(self, action: SinkAction) -> None:
        if isinstance(action, PlayAudio):
            assert isinstance(self._sink, MediaAudioSink), "only a media-track core plays audio"
            self._sink.push(action.response_id, action.samples, action.sample_rate)
        elif isinstance(action, HoldAudio):
            self._sink.hold()
        elif isinstance(action, ResumeAudio):
            self._sink.resume()
        elif isinstance(action, ClearAudio):
            self._sink.clear()
        elif isinstance(action, FinishAudio):
            self._sink.finish(action.response_id)

    async def _cancel_all(self, writer: asyncio.Task[None]) -> None:
        tasks = [*self._tasks, writer]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._llm.aclose()
        await self._asr.aclose()
        self._tasks.clear()
        self._transcribe_jobs.clear()
        self._turn_end_jobs.clear()
        self._responses.clear()

    # --- carrying out actions ----------------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._outbox.put_nowait(action.event)
                if self._observer is not None:
                    self._observer.sent(action.event)
            elif isinstance(action, SinkAction):
                self._outbox.put_nowait(action)
                if isinstance(action, PlayAudio) and self._observer is not None:
                    self._observer.reply_audio()
            elif isinstance(action, Transcribe):
                token = CancelToken()
                task = self._spawn(self._transcribe(action, token), f"asr-{action.job_id}")
                self._transcribe_jobs[action.job_id] = (task, token)
            elif isinstance(action, DraftTranscribe):
                self._asr.draft(action.item_id, action.audio, action.language)
            elif isinstance(action, PredictTurnEnd):
                token = CancelToken()
                task = self._spawn(self._predict_turn_end(action, token), f"turn-end-{action.job_id}")
                self._turn_end_jobs[action.job_id] = (task, token)
            elif isinstance(action, CancelTurnEnd):
                _cancel_job(self._turn_end_jobs, action.job_id)
            elif isinstance(action, CancelTranscribe):
                _cancel_job(self._transcribe_jobs, action.job_id)
                _cancel_job(self._turn_end_jobs, action.job_id)
                self._llm.drop(action.job_id)
            elif isinstance(action, PrefetchReply) and self._reply_ahead:
                a, languages = action, self._engines.tts.info.languages
                self._llm.prefetch(
                    a.job_id, llm_request(a.messages, languages, a.audio, a.tools, a.tool_choice, a.max_tokens)
                )
            elif isinstance(action, ReadAhead):
                languages = self._engines.tts.info.languages
                request = llm_request(action.messages, languages, action.audio, action.tools, action.tool_choice)
                self._llm.read_ahead(f"draft-{action.item_id}", request)
            elif isinstance(action, StartResponse):
                self._responses[action.response_id] = self._spawn(self._respond(action), action.response_id)
            elif isinstance(action, CancelResponse):
                response_task = self._responses.pop(action.response_id, None)
                if response_task is not None:
                    response_task.cancel()

    def _drafted(self, item_id: str, text: str, sure: bool) -> None:
        """A draft of the turn ``item_id``; ``sure``: in the language its transcript will have."""
        actions = self.core.heard_so_far(item_id, text) if sure else []
        if self._room_to_read_ahead is not None and self._room_to_read_ahead():
            actions += self.core.read_ahead(item_id, text)
        self._execute(actions)

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _transcribe(self, job: Transcribe, token: CancelToken) -> None:
        try:
            due = time.monotonic() + job.due_in_ms / 1000.0
            with needed_by(lambda: due):
                prompt = self.core.config.transcription_prompt  # words to expect: Whisper's, Fun-ASR's hotwords
                transcript = await self._asr.transcribe(
                    job.item_id, job.audio, language=job.language, cancel=token, prompt=prompt
                )
        except EngineCancelled:
            return
        except UnsupportedLanguageError as exc:  # the client's mistake, not the server's: no reply to it
            self._execute(self.core.transcription_failed(job.job_id, str(exc), code=exc.code))
            return
        except EngineError as exc:
            self._execute(self.core.transcription_failed(job.job_id, str(exc)))
            return
        finally:
            self._transcribe_jobs.pop(job.job_id, None)
        self._execute(self.core.transcription_done(job.job_id, transcript.text, transcript.duration_s))

    async def _predict_turn_end(self, job: PredictTurnEnd, token: CancelToken) -> None:
        model = self._engines.turn_end
        try:
            if model is None:
                return
            due = time.monotonic() + job.due_in_ms / 1000.0
            with needed_by(lambda: due):
                probability = await model.probability(job.audio, cancel=token)
        except EngineCancelled:
            return
        except EngineError as exc:  # the silence wait still ends the turn
            logger.warning("end-of-turn model failed: %s", exc)
            return
        finally:
            self._turn_end_jobs.pop(job.job_id, None)
        self._execute(self.core.turn_end_predicted(job.job_id, probability))

    async def _respond(self, start: StartResponse) -> None:
        try:
            await self._replies.play(start)
        finally:
            self._responses.pop(start.response_id, None)


def _cancel_job(jobs: dict[str, tuple[asyncio.Task[None], CancelToken]], job_id: str) -> None:
    """Stop an engine job: its token skips or aborts the engine call, the task stops waiting."""
    job = jobs.pop(job_id, None)
    if job is not None:
        task, token = job
        token.cancel()
        task.cancel()
