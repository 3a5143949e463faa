"""The uncommitted input audio of a session, with turn detection when it is on."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from cosyagent.agent.session_config import TurnDetection
from cosyagent.engines.base import AudioF32, VADStream
from cosyagent.pipeline.turns import TurnDetector, TurnEvent


class InputBuffer:
    def __init__(
        self,
        vad: VADStream,
        detection: TurnDetection | None,
        sample_rate: int,
        max_seconds: float,
        speculate_early: Callable[[], bool] = lambda: False,
        draft_ahead: Callable[[], bool] = lambda: False,
    ) -> None:
        self._vad = vad
        self._speculate_early = speculate_early
        self._draft_ahead = draft_ahead
        self._rate = sample_rate
        self._max_samples = int(max_seconds * sample_rate)
        self._chunks: deque[AudioF32] = deque()
        self._samples = 0
        self._detector: TurnDetector | None = None
        self.set_turn_detection(detection)

    def set_turn_detection(self, detection: TurnDetection | None) -> None:
        self._vad.reset()
        self._detector = (
            TurnDetector(
                self._vad,
                threshold=detection.threshold,
                prefix_padding_ms=detection.prefix_padding_ms,
                silence_duration_ms=detection.silence_duration_ms,
                interrupt_min_speech_ms=detection.interrupt_min_speech_ms,
                sample_rate=self._rate,
                speculate_early=self._speculate_early,
                draft_ahead=self._draft_ahead,
            )
            if detection is not None
            else None
        )

    def push(self, samples: AudioF32) -> list[TurnEvent]:
        """Keep the audio (the oldest is dropped past the limit) and detect turns in it."""
        self._chunks.append(samples)
        self._samples += samples.size
        while self._samples > self._max_samples and len(self._chunks) > 1:
            self._samples -= self._chunks.popleft().size
        return self._detector.push(samples) if self._detector is not None else []

    def end_turn(self) -> list[TurnEvent]:
        """End the current turn now, if its speaker is paused (see TurnDetector.end_turn)."""
        return self._detector.end_turn() if self._detector is not None else []

    def take_all(self) -> AudioF32:
        """Return the buffered audio and start afresh (a new turn too)."""
        audio = np.concatenate(list(self._chunks)) if self._chunks else np.zeros(0, dtype=np.float32)
        self._chunks.clear()
        self._samples = 0
        if self._detector is not None:
            self._detector.reset()
        return audio
