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
from collections.abc import Iterator
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
    import torch  # deferred: only the production stack has it

    uid = f"cosyagent-{uuid.uuid4().hex}"
    wake = threading.Condition()
    stop = threading.Event()
    tokens = _TokenSink(wake, stop)
    done = threading.Event()
    failure: list[BaseException] = []

    def llm_thread() -> None:
        try:
            model.llm_job(
                model_input["text"],
                model_input.get("prompt_text", torch.zeros(1, 0, dtype=torch.int32)),
                model_input.get("llm_prompt_speech_token", torch.zeros(1, 0, dtype=torch.int32)),
                model_input.get("llm_embedding", torch.zeros(0, 192)),
                uid,
            )
        except EngineCancelled:
            pass
        except Exception as exc:  # noqa: BLE001  (handed to the generating thread)
            failure.append(exc)
        finally:
            with wake:
                done.set()
                wake.notify_all()

    def wake_up() -> None:
        stop.set()
        if text_feed is not None:
            text_feed.abort()  # an LLM thread waiting for more text gets EngineCancelled
        with wake:
            wake.notify_all()

    prompt_token = model_input.get("flow_prompt_speech_token", torch.zeros(1, 0, dtype=torch.int32))
    prompt_feat = model_input.get("prompt_speech_feat", torch.zeros(1, 0, 80))
    embedding = model_input.get("flow_embedding", torch.zeros(0, 192))

    def to_wav(count: int, offset: int, finalize: bool) -> AudioF32:
        with wake:
            chunk = torch.tensor(list(tokens[:count]), dtype=torch.int32).unsqueeze(dim=0)
        speech = model.token2wav(
            token=chunk,
            prompt_token=prompt_token,
            prompt_feat=prompt_feat,
            embedding=embedding,
            token_offset=offset,
            uuid=uid,
            stream=stream,
            finalize=finalize,
            speed=speed,
        )
        return np.asarray(speech.detach().cpu().numpy(), dtype=np.float32).reshape(-1)

    with model.lock:
        model.tts_speech_token_dict[uid] = tokens
        model.llm_end_dict[uid] = False
        model.hift_cache_dict[uid] = None
    unregister = cancel.on_cancel(wake_up)
    thread = threading.Thread(target=llm_thread, name=f"cosyvoice-llm-{uid[-8:]}", daemon=True)
    thread.start()
    try:
        offset = 0
        hop = schedule.first_hop
        pad = math.ceil(prompt_token.shape[1] / hop) * hop - prompt_token.shape[1]
        while stream:
            this_hop = hop + pad if offset == 0 else hop
            need = offset + this_hop + schedule.lookahead
            with wake:
                wake.wait_for(lambda need=need: stop.is_set() or done.is_set() or len(tokens) >= need)  # type: ignore[misc]
                have = len(tokens)
            cancel.raise_if_cancelled()
            if have >= need:
                yield to_wav(need, offset, finalize=False)
                offset += this_hop
                hop = min(schedule.max_hop, hop * schedule.scale)
            elif done.is_set():
                break
        if not stream:
            with wake:
                wake.wait_for(lambda: stop.is_set() or done.is_set())
        cancel.raise_if_cancelled()
        if failure:
            raise EngineError(f"CosyVoice generation failed: {failure[0]}") from failure[0]
        tail = to_wav(len(tokens), offset, finalize=True)
        if tail.size:
            yield tail
    finally:
        wake_up()  # stops the LLM thread at its next token (closed or cancelled stream)
        unregister()
        thread.join(_JOIN_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("CosyVoice LLM thread %s still running after %.0f s", thread.name, _JOIN_TIMEOUT_S)
        with model.lock:
            model.tts_speech_token_dict.pop(uid, None)
            model.llm_end_dict.pop(uid, None)
            model.hift_cache_dict.pop(uid, None)
