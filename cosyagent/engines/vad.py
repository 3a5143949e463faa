"""Silero VAD v5 on onnxruntime: one shared session, one small state per session.

The model file ships inside pipecat-ai (``pipecat/audio/vad/data/silero_vad.onnx``); it is
located without importing pipecat, whose package init logs a banner and pulls in loguru.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from cosyagent.engines.base import AudioF32, EngineInfo, EngineUnavailableError

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16_000
_FRAME_SAMPLES = 512
_CONTEXT_SAMPLES = 64  # v5 prepends the tail of the previous frame to each frame
_STATE_SHAPE = (2, 1, 128)


def default_model_path() -> Path:
    """The Silero ONNX file inside the installed pipecat-ai distribution."""
    spec = importlib.util.find_spec("pipecat")  # a top-level spec: nothing is executed
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError("Silero VAD model not found: pipecat-ai is not installed")
    for root in spec.submodule_search_locations:
        path = Path(root) / "audio" / "vad" / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    raise EngineUnavailableError("Silero VAD model not found inside the installed pipecat-ai")


class SileroVADStream:
    """Per-session recurrent state and context for :class:`SileroVAD`.

    Not thread-safe on its own: one session feeds its frames in order. Many streams
    may run concurrently against the shared session.
    """

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self._sr = np.array(_SAMPLE_RATE, dtype=np.int64)
        self._state: npt.NDArray[np.float32] = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context: npt.NDArray[np.float32] = np.zeros((1, _CONTEXT_SAMPLES), dtype=np.float32)

    def speech_probability(self, frame: AudioF32) -> float:
        """Probability of speech in exactly 512 samples of 16 kHz float32 audio."""
        samples = np.asarray(frame, dtype=np.float32).reshape(-1)
        if samples.shape[0] != _FRAME_SAMPLES:
            raise ValueError(f"Silero VAD needs frames of {_FRAME_SAMPLES} samples, got {samples.shape[0]}")
        x = np.concatenate((self._context, samples[np.newaxis, :]), axis=1)
        out, state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._state = np.asarray(state, dtype=np.float32)
        self._context = x[:, -_CONTEXT_SAMPLES:]
        return float(np.asarray(out).reshape(-1)[0])

    def reset(self) -> None:
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT_SAMPLES), dtype=np.float32)


class SileroVAD:
    """Silero VAD v5 (16 kHz, 512-sample frames, ~0.3 ms a frame on one thread).

    ``load()`` once per process, then ``new_stream()`` per session. Frames are cheap
    enough to score directly on the event loop; onnxruntime's ``run`` is thread-safe,
    so streams may also be fed from several threads.
    """

    sample_rate: int = _SAMPLE_RATE
    frame_samples: int = _FRAME_SAMPLES
    info = EngineInfo("silero", "silero-vad-v5", _SAMPLE_RATE)

    def __init__(self, model_path: str | Path | None = None) -> None:
        self._model_path = Path(model_path) if model_path is not None else None
        self._session: ort.InferenceSession | None = None

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        if self._session is not None:
            return
        path = self._model_path or default_model_path()
        started = time.perf_counter()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineUnavailableError(f"cannot load Silero VAD from {path}: {exc}") from exc
        SileroVADStream(session).speech_probability(np.zeros(_FRAME_SAMPLES, dtype=np.float32))
        self._session = session
        logger.info("Silero VAD loaded in %.2f s", time.perf_counter() - started)

    def new_stream(self) -> SileroVADStream:
        if self._session is None:
            raise EngineUnavailableError("SileroVAD.load() has not been called")
        return SileroVADStream(self._session)

    def close(self) -> None:
        """Nothing to release: the streams run inline, on their callers' threads."""
