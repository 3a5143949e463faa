"""``idle_timeout_ms`` of ``server_vad``: the user has stayed silent that long after the last
response's audio finished playing.

Time is counted in input audio, as OpenAI's ``input_audio_buffer.timeout_triggered`` reports it
(``audio_start_ms`` / ``audio_end_ms`` are offsets in the audio written to the input buffer): a
client streaming its microphone sends audio in real time, and the core stays sans-I/O. The
playback end is placed in the same time: the input position at ``response.done`` plus the audio
the listener has still to hear then, by the session's playout (a media track's own clock, or
real time from the first audio sent); without it, the input position when the response's first
audio left plus the duration of the audio sent.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_IDLE_TIMEOUT_MS = 5000  # the range OpenAI accepts for idle_timeout_ms
MAX_IDLE_TIMEOUT_MS = 30000


@dataclass(frozen=True)
class IdleSpan:
    """The silent stretch that triggered the timeout, in ms of input audio."""

    audio_start_ms: int
    audio_end_ms: int


class IdleTimer:
    def __init__(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self._heard = 0  # input samples since the session started
        self._first_audio_at: int | None = None  # input position when the response's audio began
        self._armed_at: int | None = None  # where the silence began: the estimated end of playback

    @property
    def position_ms(self) -> int:
        return self._heard * 1000 // self._rate

    def heard(self, samples: int) -> None:
        self._heard += samples

    def response_started(self) -> None:
        self._first_audio_at = None
        self._armed_at = None

    def audio_started(self) -> None:
        """The current response's first audio is leaving now."""
        if self._first_audio_at is None:
            self._first_audio_at = self._heard

    def response_ended(self, audio_sent_ms: float, unplayed_ms: float | None = None) -> None:
        """The response is done: the silence counts from when its audio has finished playing,
        ``unplayed_ms`` from now when the I/O layer knows it (its playout's clock: the media
        track's own), else estimated from when the audio began and how much was sent."""
        if unplayed_ms is not None:
            self._armed_at = self._heard + int(max(0.0, unplayed_ms) * self._rate / 1000)
        else:
            start = self._first_audio_at if self._first_audio_at is not None else self._heard
            self._armed_at = max(self._heard, start + int(audio_sent_ms * self._rate / 1000))
        self._first_audio_at = None

    def disarm(self) -> None:
        """The user spoke (or the silence already triggered once): no timeout until the next response."""
        self._armed_at = None

    def due(self, timeout_ms: int | None) -> IdleSpan | None:
        """The silent span, once ``timeout_ms`` of it has passed (and the timer is then disarmed)."""
        armed = self._armed_at
        if timeout_ms is None or armed is None or (self._heard - armed) * 1000 < timeout_ms * self._rate:
            return None
        self._armed_at = None
        return IdleSpan(armed * 1000 // self._rate, self.position_ms)
