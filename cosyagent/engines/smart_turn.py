"""Smart Turn v3 (pipecat's end-of-turn model) on onnxruntime: has the speaker finished?

The VAD hears silence; it cannot tell a finished question from a pause for breath. Smart
Turn listens to the last 8 s of the utterance (intonation, the words' shape) and gives the
probability that the turn is complete, so a turn can end ~200 ms into the silence instead
of waiting a fixed 500 ms, while an unfinished sentence keeps the floor.

The model and its Whisper log-mel front end ship inside pipecat-ai
(``pipecat/audio/turn/smart_turn/``); they are located without importing pipecat's package
init (which logs a banner and pulls in loguru). One ONNX session serves every session,
through one worker thread.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort

from cosyagent.engines.base import AudioF32, CancelToken, EngineExecutor, EngineInfo, EngineUnavailableError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW_S = 8  # the model sees the last 8 s, zero-padded at the front when shorter
_MODEL = "smart-turn-v3.2-cpu.onnx"


def _smart_turn_dir() -> Path:
    spec = importlib.util.find_spec("pipecat")  # a top-level spec: nothing is executed
    for root in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(root) / "audio" / "turn" / "smart_turn"
        if (folder / "data" / _MODEL).is_file():
            return folder
    raise EngineUnavailableError(f"Smart Turn model not found: pipecat-ai with {_MODEL} is not installed")


def _load_features(folder: Path) -> Callable[..., Any]:
    """pipecat's numpy Whisper feature extractor, loaded as a plain file: the model was trained
    on exactly these features, so we use the same code rather than an approximation."""
    spec = importlib.util.spec_from_file_location("_cosyagent_smart_turn_features", folder / "_whisper_features.py")
    if spec is None or spec.loader is None:
        raise EngineUnavailableError("Smart Turn's feature extractor is missing from pipecat-ai")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    extractor: Callable[..., Any] = module.compute_whisper_log_mel_features
    return extractor


class SmartTurn:
    """``await probability(audio)``: how likely the utterance (16 kHz float32) is a finished turn."""

    info = EngineInfo("smart_turn", "smart-turn-v3.2", SAMPLE_RATE)

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._session: ort.InferenceSession | None = None
        self._features: Callable[..., Any] | None = None
        self.executor = EngineExecutor("turn")

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def queue_depth(self) -> int:
        return self.executor.queue_depth

    def load(self) -> None:
        """Blocking: open the model and run it once (the first run is several times slower)."""
        if self._session is not None:
            return
        folder = _smart_turn_dir()
        self._features = _load_features(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        started = time.perf_counter()
        self._session = ort.InferenceSession(
            str(folder / "data" / _MODEL), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.predict(np.zeros(SAMPLE_RATE, dtype=np.float32))
        logger.info("Smart Turn loaded in %.2f s", time.perf_counter() - started)

    def predict(self, audio: AudioF32) -> float:
        """Blocking: the probability that ``audio`` ends a complete turn."""
        if self._session is None or self._features is None:
            raise EngineUnavailableError("Smart Turn is not loaded")
        window = WINDOW_S * SAMPLE_RATE
        samples = np.asarray(audio, dtype=np.float32)[-window:]
        samples = np.pad(samples, (window - samples.size, 0))
        features = self._features(samples, do_normalize=True)[np.newaxis, ...].astype(np.float32)
        (output,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(output).reshape(-1)[0])

    async def probability(self, audio: AudioF32, cancel: CancelToken | None = None) -> float:
        """The same, on the engine's worker thread; skipped if ``cancel`` fires while queued."""
        return await self.executor.run(lambda: self.predict(audio), cancel)

    def close(self) -> None:
        self.executor.shutdown()
