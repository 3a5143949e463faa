"""End-of-turn detection over VAD frames: a sans-I/O state machine.

Push 16 kHz audio, get turn events back. Besides the Realtime API's speech started /
stopped, it reports the moment the speaker *paused* (``SpeechPaused``) so that ASR can
start on the utterance during the silence wait: if the user stays quiet, the turn ends
with exactly that audio and its transcript is already (nearly) done; if they resume
(``SpeechResumed``), the speculative work is thrown away. While they speak, when the server
has room, it offers the utterance so far (``SpeechSoFar``) for a draft transcript, which the
transcript at the pause then checks instead of decoding every word again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cosyagent.engines.base import AudioF32, VADStream

# Frames above the threshold needed to call it speech: 3 x 32 ms rejects clicks and
# breaths while keeping barge-in detection near 100 ms.
MIN_SPEECH_FRAMES = 3
# Frames above the threshold after which speech over a reply pauses the agent's voice: one
# frame sooner than a turn starts (a caller hears the agent stop ~32 ms sooner), and undone
# when the run stops short of MIN_SPEECH_FRAMES.
HOLD_AFTER_FRAMES = 2
# Below threshold minus this counts as silence (hysteresis, as Silero's own iterator does).
SILENCE_HYSTERESIS = 0.15
# A pause this long starts speculative ASR; well inside any silence_duration_ms.
SPECULATE_AFTER_MS = 160
# ... or this long when the server has room to spare (``speculate_early``): the turn can end
# 64 ms sooner, at the price of ~30% more speculative transcripts, half again as many of them
# thrown away (the real VAD on the English clips of tests/data), a price only worth paying when
# it takes no CPU from anyone else.
EARLY_SPECULATE_AFTER_MS = 96
MAX_UTTERANCE_MS = 60_000
# While the speaker talks, the utterance so far is offered for a draft this often (if the
# server has room then): the last draft then lacks at most the last ~0.6 s of the words.
DRAFT_EVERY_MS = 640


@dataclass(frozen=True)
class SpeechSuspected:
    """Speech may be starting (:data:`HOLD_AFTER_FRAMES` frames above the threshold): enough to
    pause the agent's voice, not yet to start a turn."""


@dataclass(frozen=True)
class SpeechDismissed:
    """What was suspected stopped short of a turn (a click, a breath)."""


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechConfirmed:
    """Speech has gone on for ``interrupt_min_speech_ms``: long enough to interrupt the agent.

    A cough or a word fragment starts a turn but should not cut the agent off."""


@dataclass(frozen=True)
class SpeechPaused:
    """The speaker paused; ``audio`` is the utterance as it would be committed now, after
    ``silence_ms`` of silence (:data:`SPECULATE_AFTER_MS`, or the early mark)."""

    audio: AudioF32
    silence_ms: int = SPECULATE_AFTER_MS


@dataclass(frozen=True)
class SpeechResumed:
    pass


@dataclass(frozen=True)
class SpeechSoFar:
    """The speaker is still talking; ``audio`` is the utterance so far, for a draft transcript
    (every :data:`DRAFT_EVERY_MS` of the turn, on a frame of speech, when ``draft_ahead`` says the
    server has room)."""

    audio: AudioF32


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int  # where the speech ended, not when the silence wait did
    audio: AudioF32


TurnEvent = (
    SpeechSuspected
    | SpeechDismissed
    | SpeechStarted
    | SpeechConfirmed
    | SpeechPaused
    | SpeechResumed
    | SpeechSoFar
    | SpeechStopped
)


class TurnDetector:
    def __init__(
        self,
        vad: VADStream,
        *,
        threshold: float,
        prefix_padding_ms: int,
        silence_duration_ms: int,
        interrupt_min_speech_ms: int = 200,
        sample_rate: int = 16000,
        frame_samples: int = 512,
        speculate_early: Callable[[], bool] = lambda: False,
        draft_ahead: Callable[[], bool] = lambda: False,
    ) -> None:
        self._vad = vad
        self._threshold = threshold
        self._rate = sample_rate
        self._frame = frame_samples
        self._frame_ms = 1000.0 * frame_samples / sample_rate
        self._silence_frames_to_stop = max(1, round(silence_duration_ms / self._frame_ms))
        self._speculate_frames = max(1, round(SPECULATE_AFTER_MS / self._frame_ms))
        self._early_speculate_frames = max(1, round(EARLY_SPECULATE_AFTER_MS / self._frame_ms))
        self._speculate_early = speculate_early  # asked once per pause, when it reaches the early mark
        self._draft_ahead = draft_ahead  # asked every DRAFT_EVERY_MS of speech
        self._draft_frames = max(1, round(DRAFT_EVERY_MS / self._frame_ms))
        self._confirm_frames = max(MIN_SPEECH_FRAMES, round(interrupt_min_speech_ms / self._frame_ms))
        self._max_frames = round(MAX_UTTERANCE_MS / self._frame_ms)
        self._prefix: deque[AudioF32] = deque(maxlen=max(1, round(prefix_padding_ms / self._frame_ms)))
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_seen = 0
        self._reset_turn()

    def _reset_turn(self) -> None:
        self._in_speech = False
        self._speech_run = 0
        self._suspected = False  # a SpeechSuspected not yet followed by SpeechStarted or SpeechDismissed
        self._speech_frames = 0  # frames above threshold in this turn
        self._confirmed = False
        self._silence_run = 0
        self._paused = False
        self._utterance: list[AudioF32] = []
        self._speech_end_index = 0  # frames of the utterance up to the last speech frame
        # Audio kept after the last speech frame, so word endings are not clipped: the silence
        # seen when the speaker paused (so that pause and stop commit the same audio), else the
        # full pause mark.
        self._tail_frames = self._speculate_frames
        self._frames_to_draft = self._draft_frames

    @property
    def audio_ms(self) -> int:
        """Milliseconds of audio consumed since the detector was created."""
        return int(self._frames_seen * self._frame_ms)

    def reset(self) -> None:
        """Forget the current turn (e.g. on input_audio_buffer.clear)."""
        self._prefix.clear()
        self._vad.reset()
        self._reset_turn()

    def end_turn(self) -> list[TurnEvent]:
        """End the turn now, if the speaker is still paused (an end-of-turn model judged the
        utterance finished): the same stop the silence wait would give, only sooner."""
        if not (self._in_speech and self._paused):
            return []
        return [self._stop()]

    def push(self, audio: AudioF32) -> list[TurnEvent]:
        self._pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        events: list[TurnEvent] = []
        while self._pending.size >= self._frame:
            frame, self._pending = self._pending[: self._frame], self._pending[self._frame :]
            events.extend(self._on_frame(frame))
        return events

    def _on_frame(self, frame: AudioF32) -> list[TurnEvent]:
        self._frames_seen += 1
        probability = self._vad.speech_probability(frame)
        if not self._in_speech:
            return self._while_quiet(frame, probability)
        return self._while_speaking(frame, probability)

    def _while_quiet(self, frame: AudioF32, probability: float) -> list[TurnEvent]:
        self._prefix.append(frame)
        self._speech_run = self._speech_run + 1 if probability >= self._threshold else 0
        if self._speech_run < MIN_SPEECH_FRAMES:
            if self._speech_run == 0 and self._suspected:
                self._suspected = False
                return [SpeechDismissed()]
            if self._speech_run == HOLD_AFTER_FRAMES and not self._suspected:
                self._suspected = True
                return [SpeechSuspected()]
            return []
        self._suspected = False
        self._in_speech = True
        self._utterance = list(self._prefix)
        self._prefix.clear()
        self._speech_end_index = len(self._utterance)
        self._speech_frames = MIN_SPEECH_FRAMES
        started_frames = self._frames_seen - MIN_SPEECH_FRAMES
        events: list[TurnEvent] = [SpeechStarted(audio_start_ms=int(started_frames * self._frame_ms))]
        return events + self._confirm_if_long_enough()

    def _confirm_if_long_enough(self) -> list[TurnEvent]:
        if self._confirmed or self._speech_frames < self._confirm_frames:
            return []
        self._confirmed = True
        return [SpeechConfirmed()]

    def _while_speaking(self, frame: AudioF32, probability: float) -> list[TurnEvent]:
        self._utterance.append(frame)
        events: list[TurnEvent] = []
        self._frames_to_draft = max(0, self._frames_to_draft - 1)
        if probability >= self._threshold - SILENCE_HYSTERESIS:
            if probability >= self._threshold:
                self._silence_run = 0
                self._speech_frames += 1
                events.extend(self._confirm_if_long_enough())
                self._speech_end_index = len(self._utterance)
                if self._paused:
                    self._paused = False
                    self._tail_frames = self._speculate_frames
                    events.append(SpeechResumed())
        else:
            self._silence_run += 1
        if self._frames_to_draft == 0 and self._silence_run == 0:
            events.extend(self._offer_draft())
        if not self._paused and self._pause_now():
            self._paused = True
            self._tail_frames = self._silence_run
            events.append(SpeechPaused(self._committed_audio(), round(self._silence_run * self._frame_ms)))
        if self._silence_run >= self._silence_frames_to_stop or len(self._utterance) >= self._max_frames:
            events.append(self._stop())
        return events

    def _offer_draft(self) -> list[TurnEvent]:
        """The draft mark, on a frame of speech: one that falls in a silence waits for the speech
        to go on (if the silence is a pause, its transcript is taken anyway)."""
        self._frames_to_draft = self._draft_frames
        return [SpeechSoFar(np.concatenate(self._utterance))] if self._draft_ahead() else []

    def _pause_now(self) -> bool:
        if self._silence_run == self._speculate_frames:
            return True
        return self._silence_run == self._early_speculate_frames and self._speculate_early()

    def _stop(self) -> SpeechStopped:
        speech_end_ms = self.audio_ms - int(self._silence_run * self._frame_ms)
        stopped = SpeechStopped(audio_end_ms=speech_end_ms, audio=self._committed_audio())
        self._reset_turn()
        return stopped

    def _committed_audio(self) -> AudioF32:
        """The utterance up to the last speech frame plus a short tail: the same audio at
        pause time and at stop time, so a speculative transcript stays valid."""
        end = min(len(self._utterance), self._speech_end_index + self._tail_frames)
        return np.concatenate(self._utterance[:end]) if end else np.zeros(0, dtype=np.float32)
