"""One CosyVoice3 generation, run by us instead of upstream's ``model.tts`` loop.

Upstream's loop (cosyvoice/cli/model.py at ace7c47) polls with ``sleep(0.1)``, grows the
chunk size by mutating the shared ``model.token_hop_len`` (so chunk sizes leak between
concurrent requests), and cleans its per-request dicts only on normal completion (an
abandoned stream keeps its LLM thread running). This loop drives the same model parts
(``llm_job``, ``token2wav``) with the chunk schedule in local variables, a condition
variable instead of polling, a token sink that stops the LLM thread at its next token
once the request is cancelled or closed, and cleanup in ``finally``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosyagent.engines.base import AudioF32, CancelToken, EngineCancelled, EngineError

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ChunkSchedule:
    """Speech tokens per chunk: ``first_hop`` grows by ``scale`` up to ``max_hop`` (per request)."""

    first_hop: int
    max_hop: int
    scale: int
    lookahead: int


class TextFeed:
    """Text deltas from the event loop to the model's LLM thread, as a real generator."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._aborted = threading.Event()
        self.received = 0  # deltas handed to the model so far

    def put(self, text: str) -> None:
        if text:
            self._queue.put(text)

    def close(self) -> None:
        self._queue.put(self._END)

    def abort(self) -> None:
        self._aborted.set()
        self._queue.put(self._END)

    def generator(self) -> Iterator[str]:
        """A generator object (upstream checks ``isinstance(text, Generator)``)."""
        while True:
            item = self._queue.get()
            if self._aborted.is_set():
                raise EngineCancelled()
            if item is self._END:
                return
            self.received += 1
            yield str(item)


async def pump_text(text: AsyncIterator[str], feed: TextFeed) -> None:
    """Hand text deltas to the model's LLM thread as the LLM produces them."""
    try:
        async for delta in text:
            feed.put(delta)
    finally:
        feed.close()


class _TokenSink(list[int]):
    """The per-request token list ``llm_job`` appends to: wakes the loop, stops the LLM when told."""

    def __init__(self, wake: threading.Condition, stop: threading.Event) -> None:
        super().__init__()
        self._wake = wake
        self._stop = stop

    def append(self, token: int) -> None:
        if self._stop.is_set():
            raise EngineCancelled()
        with self._wake:
            super().append(token)
            self._wake.notify_all()


class _Utterance:
    """One request's state: uid, token sink, wake-up condition, stop/done events, failure, prompt tensors."""

    def __init__(
        self,
        model: Any,
        model_input: dict[str, Any],
        *,
        stream: bool,
        speed: float,
        text_feed: TextFeed | None,
    ) -> None:
        import torch  # deferred: only the production stack has it

        self._torch: Any = torch
        self._model = model
        self._input = model_input
        self._stream = stream
        self._speed = speed
        self._text_feed = text_feed
        self.uid = f"cosyagent-{uuid.uuid4().hex}"
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._tokens = _TokenSink(self._wake, self._stop)
        self._done = threading.Event()
        self._failure: list[BaseException] = []
        self._prompt_token = model_input.get("flow_prompt_speech_token", torch.zeros(1, 0, dtype=torch.int32))
        self._prompt_feat = model_input.get("prompt_speech_feat", torch.zeros(1, 0, 80))
        self._embedding = model_input.get("flow_embedding", torch.zeros(0, 192))

    def add_request_entries(self) -> None:
        with self._model.lock:
            self._model.tts_speech_token_dict[self.uid] = self._tokens
            self._model.llm_end_dict[self.uid] = False
            self._model.hift_cache_dict[self.uid] = None

    def remove_request_entries(self) -> None:
        with self._model.lock:
            self._model.tts_speech_token_dict.pop(self.uid, None)
            self._model.llm_end_dict.pop(self.uid, None)
            self._model.hift_cache_dict.pop(self.uid, None)

    def run_llm(self) -> None:
        """The LLM thread: ``llm_job`` fills the token sink; a failure is kept for the generating thread."""
        torch = self._torch
        try:
            self._model.llm_job(
                self._input["text"],
                self._input.get("prompt_text", torch.zeros(1, 0, dtype=torch.int32)),
                self._input.get("llm_prompt_speech_token", torch.zeros(1, 0, dtype=torch.int32)),
                self._input.get("llm_embedding", torch.zeros(0, 192)),
                self.uid,
            )
        except EngineCancelled:
            pass
        except Exception as exc:  # noqa: BLE001  (handed to the generating thread)
            self._failure.append(exc)
        finally:
            with self._wake:
                self._done.set()
                self._wake.notify_all()

    def stop_llm(self) -> None:
        """Wakes the chunk loop and stops the LLM thread at its next token (or its wait for text)."""
        self._stop.set()
        if self._text_feed is not None:
            self._text_feed.abort()  # an LLM thread waiting for more text gets EngineCancelled
        with self._wake:
            self._wake.notify_all()

    def audio(self, schedule: ChunkSchedule, cancel: CancelToken) -> Iterator[AudioF32]:
        """Streamed chunks as tokens arrive (when streaming), then the finalizing tail."""
        offset = 0
        if self._stream:
            offset = yield from self._streamed_chunks(schedule, cancel)
        else:
            with self._wake:
                self._wake.wait_for(lambda: self._stop.is_set() or self._done.is_set())
        cancel.raise_if_cancelled()
        if self._failure:
            raise EngineError(f"CosyVoice generation failed: {self._failure[0]}") from self._failure[0]
        tail = self._to_wav(len(self._tokens), offset, finalize=True)
        if tail.size:
            yield tail

    def _streamed_chunks(self, schedule: ChunkSchedule, cancel: CancelToken) -> Generator[AudioF32, None, int]:
        """One chunk per hop while the LLM runs; returns the token offset the tail starts at."""
        offset = 0
        hop = schedule.first_hop
        prompt_len = self._prompt_token.shape[1]
        pad = math.ceil(prompt_len / hop) * hop - prompt_len
        while True:
            this_hop = hop + pad if offset == 0 else hop
            need = offset + this_hop + schedule.lookahead
            have = self._wait_for_tokens(need)
            cancel.raise_if_cancelled()
            if have >= need:
                yield self._to_wav(need, offset, finalize=False)
                offset += this_hop
                hop = min(schedule.max_hop, hop * schedule.scale)
            elif self._done.is_set():
                return offset

    def _wait_for_tokens(self, need: int) -> int:
        """Blocks until ``need`` tokens, the LLM's end, or a stop; returns the token count."""
        with self._wake:
            self._wake.wait_for(lambda: self._stop.is_set() or self._done.is_set() or len(self._tokens) >= need)
            return len(self._tokens)

    def _to_wav(self, count: int, offset: int, finalize: bool) -> AudioF32:
        with self._wake:
            chunk = self._torch.tensor(list(self._tokens[:count]), dtype=self._torch.int32).unsqueeze(dim=0)
        speech = self._model.token2wav(
            token=chunk,
            prompt_token=self._prompt_token,
            prompt_feat=self._prompt_feat,
            embedding=self._embedding,
            token_offset=offset,
            uuid=self.uid,
            stream=self._stream,
            finalize=finalize,
            speed=self._speed,
        )
        return np.asarray(speech.detach().cpu().numpy(), dtype=np.float32).reshape(-1)


def stream_speech(
    model: Any,
    model_input: dict[str, Any],
    schedule: ChunkSchedule,
    *,
    stream: bool,
    speed: float,
    cancel: CancelToken,
    text_feed: TextFeed | None = None,
) -> Iterator[AudioF32]:
    """Generate one utterance from a frontend ``model_input``; blocking, run it in a worker thread."""
    utterance = _Utterance(model, model_input, stream=stream, speed=speed, text_feed=text_feed)
    utterance.add_request_entries()
    unregister = cancel.on_cancel(utterance.stop_llm)
    thread = threading.Thread(target=utterance.run_llm, name=f"cosyvoice-llm-{utterance.uid[-8:]}", daemon=True)
    thread.start()
    try:
        yield from utterance.audio(schedule, cancel)
    finally:
        utterance.stop_llm()  # stops the LLM thread at its next token (closed or cancelled stream)
        unregister()
        thread.join(_JOIN_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("CosyVoice LLM thread %s still running after %.0f s", thread.name, _JOIN_TIMEOUT_S)
        utterance.remove_request_entries()
