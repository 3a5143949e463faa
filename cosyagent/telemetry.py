"""Prometheus metrics: per-stage latency, sessions, engine queues, errors and responses.

One :class:`Telemetry` per process (the :class:`~cosyagent.runtime.Runtime` owns it), with
its own ``CollectorRegistry``, never prometheus_client's global one, so that tests can
build many apps in one process. A :class:`SessionObserver` per Realtime session turns the
events the session sends (plain dicts) and its VAD frames into stage latencies; it
imports nothing else of cosyagent, so every layer may use it.

Stages (seconds, on the server's monotonic clock):

- ``end_of_turn``: the last VAD frame scored as speech (at the session's VAD threshold)
  was processed -> the turn ended (``speech_stopped``): the silence wait, or the pause
  after which the end-of-turn model ended it, plus any lag in processing the audio.
- ``asr``: the turn ended (``committed``) -> its final transcript. Near zero when the
  speculative transcription started during the silence wait has already finished.
- ``llm_first_token``, ``first_clause``, ``tts_first_audio``: from the start of a reply.
- ``response_first_audio``: the turn ended -> the first audio delta of the reply to it.
- ``barge_in_stop``: speech started during a reply -> that reply was cancelled for it
  (includes the ``interrupt_min_speech_ms`` that tells speech from a cough).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STAGES = (
    "end_of_turn",
    "asr",
    "llm_first_token",
    "first_clause",
    "tts_first_audio",
    "response_first_audio",
    "barge_in_stop",
)
RESPONSE_STATUSES = ("completed", "cancelled", "failed", "incomplete")
# 10 ms .. 10 s: the range of every stage above, dense around the 100 ms .. 1 s that matters.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
# VAD frames kept to find the end of speech: 10 s of 32 ms frames.
_VAD_FRAMES_KEPT = 320

QueueDepths = Callable[[], Mapping[str, int]]
# The sessions admitted at once now, and the measured per-turn cost of each stage (seconds).
CapacityReport = Callable[[], tuple[int, Mapping[str, float]]]
# Why a session was refused at admission, on every transport: past server.capacity (measured
# or set), past server.max_sessions. (WebRTC also counts "call_limit": past webrtc.max_calls.)
REFUSAL_REASONS = ("server_at_capacity", "session_limit")
Clock = Callable[[], float]


class Telemetry:
    def __init__(
        self,
        queue_depths: QueueDepths | None = None,
        *,
        capacity: CapacityReport | None = None,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.stage_seconds = Histogram(
            "cosyagent_stage_seconds",
            "Latency of one stage of a voice turn, on the server",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.active_sessions = Gauge(
            "cosyagent_active_sessions", "Realtime sessions running now", ["transport"], registry=self.registry
        )
        self.sessions = Counter(
            "cosyagent_sessions", "Realtime sessions started", ["transport"], registry=self.registry
        )
        self.errors = Counter(
            "cosyagent_errors",
            "Errors sent to clients: realtime error events and HTTP error responses",
            ["source", "code"],
            registry=self.registry,
        )
        self.responses = Counter(
            "cosyagent_responses",
            "Realtime responses ended, by status (one whose client left: cancelled)",
            ["status"],
            registry=self.registry,
        )
        self.job_wait_seconds = Histogram(
            "cosyagent_engine_job_wait_seconds",
            "How long an engine job (a transcript, a clause) waited for the CPU",
            ["engine"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.job_late_seconds = Histogram(
            "cosyagent_engine_job_late_seconds",
            "How long after its deadline (when its output was needed) an engine job started; 0 if in time",
            ["engine"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refused = Counter(
            "cosyagent_sessions_refused",
            "Realtime sessions refused at admission, by transport and reason",
            ["transport", "reason"],
            registry=self.registry,
        )
        for stage in STAGES:  # present from the first scrape, so rate() and absent() behave
            self.stage_seconds.labels(stage)
        for status in RESPONSE_STATUSES:
            self.responses.labels(status)
        if queue_depths is not None:
            self.registry.register(_QueueDepthCollector(queue_depths))
        if capacity is not None:
            self.registry.register(_CapacityCollector(capacity))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def observe(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(max(0.0, seconds))

    def engine_job_started(self, engine: str, waited_s: float, late_s: float) -> None:
        """An engine job got the CPU (the scheduler's observer; called from any thread)."""
        self.job_wait_seconds.labels(engine).observe(max(0.0, waited_s))
        self.job_late_seconds.labels(engine).observe(max(0.0, late_s))

    def add_transport(self, transport: str) -> None:
        """A transport sessions can arrive on: its labels are present from the next scrape."""
        self.active_sessions.labels(transport)
        self.sessions.labels(transport)
        for reason in REFUSAL_REASONS:
            self.refused.labels(transport, reason)

    def count_refusal(self, transport: str, reason: str) -> None:
        """A session refused at admission (``reason``: its error code)."""
        self.refused.labels(transport, reason).inc()

    def count_error(self, source: str, code: str) -> None:
        self.errors.labels(source, code).inc()

    def session_observer(self, transport: str, clock: Clock = time.monotonic) -> SessionObserver:
        return SessionObserver(self, transport, clock)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics as (body, content type): OpenMetrics if ``accept`` asks for it, else text."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _QueueDepthCollector(Collector):
    """Reads the engines' queue depths when scraped (no polling task)."""

    def __init__(self, queue_depths: QueueDepths) -> None:
        self._queue_depths = queue_depths

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "cosyagent_engine_queue_depth",
            "Calls queued on an engine's worker, the running one included",
            labels=["engine"],
        )
        for engine, depth in sorted(self._queue_depths().items()):
            family.add_metric([engine], depth)
        yield family

    def describe(self) -> Iterable[Metric]:
        # Describing must not call the engines: it runs at registration, before they exist.
        yield GaugeMetricFamily("cosyagent_engine_queue_depth", "", labels=["engine"])


class _CapacityCollector(Collector):
    """Reads the admission capacity and the measured turn costs when scraped."""

    def __init__(self, report: CapacityReport) -> None:
        self._report = report

    def collect(self) -> Iterable[Metric]:
        sessions, stages = self._report()
        yield GaugeMetricFamily(
            "cosyagent_capacity_sessions",
            "Realtime sessions admitted at once (server.capacity, measured or set, capped by max_sessions)",
            value=sessions,
        )
        costs = self._costs()
        for stage, seconds in sorted(stages.items()):
            costs.add_metric([stage], seconds)
        yield costs

    def describe(self) -> Iterable[Metric]:
        # Describing must not call the runtime: it runs at registration, before it exists.
        yield GaugeMetricFamily("cosyagent_capacity_sessions", "", value=0)
        yield self._costs()

    @staticmethod
    def _costs() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "cosyagent_capacity_turn_cost_seconds",
            "What one turn costs on this machine, by stage, measured at startup and again when idle (turn: their sum)",
            labels=["stage"],
        )


Frame = TypeVar("Frame", contravariant=True)


class _FrameScorer(Protocol[Frame]):
    def speech_probability(self, frame: Frame) -> float: ...

    def reset(self) -> None: ...


class TimedVADStream(Generic[Frame]):
    """A VAD stream that tells its observer when each frame was scored, and how."""

    def __init__(self, inner: _FrameScorer[Frame], observer: SessionObserver) -> None:
        self._inner = inner
        self._observer = observer

    def speech_probability(self, frame: Frame) -> float:
        probability = self._inner.speech_probability(frame)
        self._observer.vad_frame(probability)
        return probability

    def reset(self) -> None:
        self._inner.reset()


class SessionObserver:
    """One Realtime session's view for telemetry: fed the events it sends, in order.

    Not thread-safe: call it from the session's event loop.
    """

    def __init__(self, telemetry: Telemetry, transport: str, clock: Clock = time.monotonic) -> None:
        self._telemetry = telemetry
        self._transport = transport
        self._clock = clock
        self._open = False
        # The session's VAD threshold now (None: no turn detection); the runtime binds it.
        self.vad_threshold: Callable[[], float | None] = lambda: None
        self._frames: deque[tuple[float, float]] = deque(maxlen=_VAD_FRAMES_KEPT)
        self._committed_at: dict[str, float] = {}  # user item -> when its turn ended
        self._last_turn_end: float | None = None  # the latest turn no reply has started for
        self._reply_turn_end: float | None = None  # the turn the running reply answers
        self._in_response = False
        self._barge_in_at: float | None = None
        self._silence_item: str | None = None  # the item an idle timeout commits: no one spoke

    def timed_vad(self, inner: _FrameScorer[Frame]) -> TimedVADStream[Frame]:
        return TimedVADStream(inner, self)

    def opened(self) -> None:
        if not self._open:
            self._open = True
            self._telemetry.sessions.labels(self._transport).inc()
            self._telemetry.active_sessions.labels(self._transport).inc()

    def closed(self) -> None:
        if self._open:
            self._open = False
            self._telemetry.active_sessions.labels(self._transport).dec()
        if self._in_response:  # the client left mid-reply: no response.done went, the reply was cut
            self._in_response = False
            self._telemetry.responses.labels("cancelled").inc()

    def vad_frame(self, probability: float) -> None:
        self._frames.append((self._clock(), probability))

    def reply_timings(self, **seconds: float | None) -> None:
        """A reply's milestones (seconds from its start; None where not reached)."""
        for stage, value in seconds.items():
            if value is not None:
                self._telemetry.observe(stage, value)

    def sent(self, event: Mapping[str, Any]) -> None:
        handler = self._handlers.get(event.get("type", ""))
        if handler is not None:
            handler(self, event, self._clock())

    # --- per event type ------------------------------------------------------------------

    def _on_speech_started(self, event: Mapping[str, Any], now: float) -> None:
        self._barge_in_at = now if self._in_response else None

    def _on_speech_stopped(self, event: Mapping[str, Any], now: float) -> None:
        self._barge_in_at = None
        speech_end = self._last_speech_frame()
        if speech_end is not None:
            self._telemetry.observe("end_of_turn", now - speech_end)
        self._frames.clear()

    def _on_timeout_triggered(self, event: Mapping[str, Any], now: float) -> None:
        self._silence_item = event.get("item_id")

    def _on_committed(self, event: Mapping[str, Any], now: float) -> None:
        # The silence an idle timeout commits is no turn: it has no transcript to time, and the
        # prompt that follows answers no one (it would count as a reply ~ as fast as the voice).
        item_id = event.get("item_id")
        if item_id == self._silence_item:
            return
        if isinstance(item_id, str):
            self._committed_at[item_id] = now
        self._last_turn_end = now

    def _on_item_done(self, event: Mapping[str, Any], now: float) -> None:
        # A committed turn's item is done when its transcript is: the ASR stage, timed whether
        # or not the client asked for the transcription events.
        item = event.get("item") or {}
        committed = self._committed_at.pop(str(item.get("id")), None)
        if committed is not None:
            self._telemetry.observe("asr", now - committed)

    def _on_transcript_failed(self, event: Mapping[str, Any], now: float) -> None:
        self._committed_at.pop(str(event.get("item_id")), None)

    def _on_response_created(self, event: Mapping[str, Any], now: float) -> None:
        self._in_response = True
        self._reply_turn_end, self._last_turn_end = self._last_turn_end, None

    def reply_audio(self) -> None:
        """Reply audio left for a media track (it travels in no event)."""
        self._on_audio_delta({}, self._clock())

    def _on_audio_delta(self, event: Mapping[str, Any], now: float) -> None:
        if self._reply_turn_end is not None:
            self._telemetry.observe("response_first_audio", now - self._reply_turn_end)
            self._reply_turn_end = None

    def _on_response_done(self, event: Mapping[str, Any], now: float) -> None:
        response = event.get("response") or {}
        status = str(response.get("status"))
        self._telemetry.responses.labels(status).inc()
        details = response.get("status_details") or {}
        if status == "cancelled" and details.get("reason") == "turn_detected" and self._barge_in_at is not None:
            self._telemetry.observe("barge_in_stop", now - self._barge_in_at)
        self._in_response = False
        self._reply_turn_end = self._barge_in_at = None

    def _on_error(self, event: Mapping[str, Any], now: float) -> None:
        error = event.get("error") or {}
        self._telemetry.count_error("realtime", str(error.get("code") or error.get("type") or "unknown"))

    def _last_speech_frame(self) -> float | None:
        """When the last frame at or above the VAD threshold was scored (the turn detector's speech end)."""
        threshold = self.vad_threshold()
        if threshold is None:
            return None
        return next((at for at, p in reversed(self._frames) if p >= threshold), None)

    _handlers: ClassVar[dict[str, Callable[[SessionObserver, Mapping[str, Any], float], None]]] = {
        "input_audio_buffer.speech_started": _on_speech_started,
        "input_audio_buffer.speech_stopped": _on_speech_stopped,
        "input_audio_buffer.timeout_triggered": _on_timeout_triggered,
        "input_audio_buffer.committed": _on_committed,
        "conversation.item.done": _on_item_done,
        "conversation.item.input_audio_transcription.failed": _on_transcript_failed,
        "response.created": _on_response_created,
        "response.output_audio.delta": _on_audio_delta,
        "response.done": _on_response_done,
        "error": _on_error,
    }
