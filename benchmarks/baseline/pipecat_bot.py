"""The baseline server: cosyagent's embedded models assembled as a stock pipecat pipeline.

    python -m benchmarks.baseline.pipecat_bot --port 8301

Every WebSocket connection to ``/ws?session=KEY`` runs its own pipecat pipeline, built the
way pipecat's own websocket bots build it, with pipecat's services and defaults:

    FastAPIWebsocketTransport.input()   ProtobufFrameSerializer, 16 kHz in / 24 kHz out
    WhisperSTTService                    the Whisper tiny.en int8 directory cosyagent uses
    LLMContextAggregatorPair.user()      SileroVADAnalyzer() and the default turn strategies
                                         (VAD start; Smart Turn v3 stop, bundled with pipecat)
    LlamaCppLLMService                   OpenAILLMService without the "developer" role, on a
                                         llama.cpp server this process starts (below)
    KokoroTTSService                     Kokoro-82M int8 + the voices file cosyagent uses
    FastAPIWebsocketTransport.output()
    LLMContextAggregatorPair.assistant()

What is set, and why (everything else is pipecat's default):

- model files, voice, system prompt and reply cap (``max_completion_tokens`` 80): the same as
  cosyagent's Kokoro + SmolLM2 stack (``cosyagent/configs/kokoro-smollm2.yaml``, the embedded
  default until issue #13; paths found by cosyagent's own helpers). pipecat's Kokoro service
  is what this baseline is built on: compare it with ``cosyagent bench --config
  configs/kokoro-smollm2.yaml``. The cap changes no first-audio latency; without it SmolLM2 rambles for 15-40 s
  of speech, and every turn of the benchmark waits for the reply to play out;
- Whisper ``compute_type="int8"``: the model compared is tiny.en int8, as cosyagent loads it
  (pipecat's ``"default"`` would run these float16-saved weights as float32 on a CPU);
- ``audio_in_enabled`` / ``audio_out_enabled`` and the serializer: a websocket transport
  carries no audio without them;
- the llama.cpp server: ``python -m llama_cpp.server --model GGUF --n_ctx 2048`` (2048 is
  both llama-cpp-python's default and cosyagent's) ``--interrupt_requests False``: with the
  default (True) a second session's request ends the first session's reply mid-stream, which
  breaks concurrent conversations; cosyagent's server sets the same. No thread count, no
  priority, no chat format is given: llama-cpp-python's defaults (cores / 2 threads, the
  GGUF's chat template);
- ``supports_developer_role = False``, set the way pipecat's own services for OpenAI-compatible
  servers without that role set it (Ollama, Together, Mistral...): llama-cpp-python's server
  refuses a "developer" message with a 500. Pipecat sends one when a user turn ends without a
  transcript (its empty-turn recovery), which under load (8 sessions) happened to most turns
  and left them without a reply;
- loguru at WARNING (``--log-level``), like cosyagent's server under the benchmark.

Services load **per connection**, in the connection's handler on the event loop, as stock
pipecat bots do: every session holds its own Whisper, Smart Turn, Silero and Kokoro, and a new
connection stalls the others while it loads. That is part of what the baseline measures.

Observability, not tuning: a :class:`StageStamps` observer per connection stamps when frames
pass (``time.monotonic()``, one clock for every process on the machine); ``GET
/timings/{session}`` returns them as JSON for the benchmark client. ``GET /health`` answers once
the llama.cpp server is up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger as loguru_logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.services.kokoro.tts import KokoroTTSService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

from benchmarks.baseline import spawn_child
from benchmarks.harness import stop_process
from cosyagent.config import DEFAULT_CONFIG, load_config
from cosyagent.engines.kokoro_tts import default_model_path as kokoro_model_file
from cosyagent.engines.kokoro_tts import default_voices_path as kokoro_voices_file
from cosyagent.engines.llama_server import default_model_path as smollm2_gguf
from cosyagent.engines.whisper_asr import default_model_path as whisper_model_dir

logger = logging.getLogger("baseline.pipecat_bot")

N_CTX = 2048
LLM_STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Assets:
    """What the pipeline is built from: cosyagent's embedded models, voice and prompt."""

    whisper_dir: Path
    gguf: Path
    kokoro_model: Path
    kokoro_voices: Path
    voice: str
    instructions: str
    max_tokens: int

    @classmethod
    def cosyagent_defaults(cls) -> Assets:
        # kokoro-smollm2.yaml, without COSYAGENT_* overrides
        realtime = load_config(DEFAULT_CONFIG.with_name("kokoro-smollm2.yaml"), environ={}).realtime
        return cls(
            whisper_model_dir(), smollm2_gguf(), kokoro_model_file(), kokoro_voices_file(),
            realtime.voice, realtime.instructions, realtime.max_output_tokens,
        )  # fmt: skip


# --- observability ---------------------------------------------------------------------------------

# Frames stamped at their first push (where they are made), by event name.
_FIRST_PUSH = (
    (VADUserStartedSpeakingFrame, "vad_started"),
    (VADUserStoppedSpeakingFrame, "vad_stopped"),
    (UserStartedSpeakingFrame, "user_started"),
    (UserStoppedSpeakingFrame, "user_stopped"),
    (InterruptionFrame, "interruption"),
    (BotStartedSpeakingFrame, "bot_started"),
    (BotStoppedSpeakingFrame, "bot_stopped"),
)


_BROADCAST_S = 0.05


class StageStamps(BaseObserver):
    """Stamps, in ``time.monotonic()`` seconds, the frames that mark a conversation's stages.

    ``reply_start`` is the context frame the user aggregator hands to the LLM once the turn has
    ended and its transcript is in: the reply starts there, as in cosyagent. After it, the first
    ``llm_text`` (first token), ``tts_started`` (pipecat's sentence aggregator handed Kokoro its
    first sentence) and ``tts_audio`` (Kokoro's first audio) of that reply. The LLM's end-of-response
    frame leaves the TTS service behind all of the reply's audio (``tts_done``: nothing is left to
    synthesize) and the output transport once that audio is sent (``reply_played``; pipecat may
    hold it there as a timed frame, so the client does not wait for it)."""

    def __init__(self) -> None:
        super().__init__()  # every push: the end of a reply is seen leaving the output transport
        self.events: list[dict[str, Any]] = []
        self._clock: SystemClock | None = None
        self._output: FrameProcessor | None = None
        self._llm: FrameProcessor | None = None
        self._tts: FrameProcessor | None = None
        self._origin_ns: int | None = None
        self._pending: set[str] = set()
        self._reply_text: list[str] = []

    def attach(self, clock: SystemClock, llm: FrameProcessor, tts: FrameProcessor, output: FrameProcessor) -> None:
        self._clock, self._llm, self._tts, self._output = clock, llm, tts, output

    def _monotonic(self, timestamp_ns: int) -> float:
        """The pipeline clock counts from its start; observers run later, from a queue."""
        if self._origin_ns is None and self._clock is not None and self._clock.get_time() > 0:
            self._origin_ns = time.monotonic_ns() - self._clock.get_time()
        origin = self._origin_ns if self._origin_ns is not None else time.monotonic_ns() - timestamp_ns
        return (origin + timestamp_ns) / 1e9

    def _stamp(self, name: str, data: FramePushed, **extra: Any) -> None:
        self.events.append({"event": name, "t": round(self._monotonic(data.timestamp), 4), **extra})

    def _stamp_signal(self, name: str, data: FramePushed) -> None:
        """A signal broadcast both ways arrives as two frames a moment apart: one event."""
        t = self._monotonic(data.timestamp)
        if any(e["event"] == name and t - e["t"] < _BROADCAST_S for e in self.events[-4:]):
            return
        self._stamp(name, data)

    async def on_push_frame(self, data: FramePushed) -> None:
        frame: Frame = data.frame
        if not data.first_push:
            if isinstance(frame, LLMFullResponseEndFrame) and data.source is self._tts:
                self._stamp("tts_done", data)
            elif isinstance(frame, LLMFullResponseEndFrame) and data.source is self._output:
                self._stamp("reply_played", data)
            return
        for kind, name in _FIRST_PUSH:
            if isinstance(frame, kind):
                self._stamp_signal(name, data)
                return
        if isinstance(frame, TranscriptionFrame):
            self._stamp("transcription", data, text=frame.text)
        elif isinstance(frame, LLMContextFrame) and data.destination is self._llm:
            self._stamp("reply_start", data)
            self._pending = {"llm_text", "tts_started", "tts_audio"}
        elif isinstance(frame, LLMFullResponseStartFrame):
            self._reply_text = []
        elif isinstance(frame, LLMTextFrame):
            self._reply_text.append(frame.text)
            self._once("llm_text", data)
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._stamp("llm_ended", data, text="".join(self._reply_text))
        elif isinstance(frame, TTSStartedFrame):
            self._once("tts_started", data)
        elif isinstance(frame, TTSAudioRawFrame):
            self._once("tts_audio", data)

    def _once(self, name: str, data: FramePushed) -> None:
        if name in self._pending:
            self._pending.discard(name)
            self._stamp(name, data)


# --- one connection ---------------------------------------------------------------------------------


class LlamaCppLLMService(OpenAILLMService):
    """llama-cpp-python's server knows no "developer" role: pipecat sends those as "user"."""

    supports_developer_role = False


async def run_bot(websocket: WebSocket, assets: Assets, llm_url: str, stamps: StageStamps) -> None:
    """The stock pipeline for one client, until it disconnects."""
    transport = FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True, serializer=ProtobufFrameSerializer()),
    )
    stt = WhisperSTTService(compute_type="int8", settings=WhisperSTTService.Settings(model=str(assets.whisper_dir)))
    llm = LlamaCppLLMService(
        api_key="unused",
        base_url=llm_url,
        settings=OpenAILLMService.Settings(
            model=str(assets.gguf), system_instruction=assets.instructions, max_completion_tokens=assets.max_tokens
        ),
    )
    tts = KokoroTTSService(
        model_path=str(assets.kokoro_model),
        voices_path=str(assets.kokoro_voices),
        settings=KokoroTTSService.Settings(voice=assets.voice),
    )
    aggregators = LLMContextAggregatorPair(
        LLMContext(), user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [transport.input(), stt, aggregators.user(), llm, tts, transport.output(), aggregators.assistant()]
    )
    # pipecat's default clock, passed in so that the stamps can read it
    clock = SystemClock()  # type: ignore[no-untyped-call]
    stamps.attach(clock, llm, tts, transport.output())
    worker = PipelineWorker(pipeline, clock=clock, observers=[stamps])

    @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
    async def on_client_disconnected(_transport: FastAPIWebsocketTransport, _client: WebSocket) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)  # one runner per connection, in a shared server process
    await runner.add_workers(worker)
    await runner.run()


# --- the llama.cpp server ------------------------------------------------------------------------------


def _os_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def llama_server(gguf: Path) -> AsyncIterator[tuple[str, int]]:
    """``python -m llama_cpp.server`` with its defaults (see the module docstring); yields (base URL, pid)."""
    port = _os_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx", str(N_CTX),
        "--host", "127.0.0.1", "--port", str(port), "--interrupt_requests", "False",
    ]  # fmt: skip
    with tempfile.NamedTemporaryFile(prefix="baseline-llama-", suffix=".log", delete=False) as log:
        process = spawn_child(command, log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + LLM_STARTUP_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"llama.cpp server exited with {process.returncode} (log {log.name})")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{url}/models")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama.cpp server not up in {LLM_STARTUP_TIMEOUT_S:g} s (log {log.name})")
                await asyncio.sleep(0.2)
        logger.warning("llama.cpp server pid %d on %s (log %s)", process.pid, url, log.name)
        yield url, process.pid
    finally:
        stop_process(process, grace_s=5.0)


# --- the app -------------------------------------------------------------------------------------------


def create_app(assets: Assets) -> FastAPI:
    sessions: dict[str, list[dict[str, Any]]] = {}
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with llama_server(assets.gguf) as (url, pid):
            state.update(llm_url=url, llm_pid=pid)
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid(), "sessions": len(sessions), **state}

    @app.get("/timings/{session}")
    async def timings(session: str) -> list[dict[str, Any]]:
        return list(sessions.get(session, []))

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, session: str = "") -> None:
        await websocket.accept()
        stamps = StageStamps()
        sessions[session or f"anonymous-{len(sessions)}"] = stamps.events
        await run_bot(websocket, assets, state["llm_url"], stamps)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8301)
    parser.add_argument("--log-level", default="WARNING", help="pipecat's (loguru) and this server's log level")
    args = parser.parse_args(argv)
    level = args.log_level.upper()
    loguru_logger.remove()
    loguru_logger.add(sys.stderr, level=level)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    app = create_app(Assets.cosyagent_defaults())
    uvicorn.run(app, host=args.host, port=args.port, log_level=level.lower(), timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
