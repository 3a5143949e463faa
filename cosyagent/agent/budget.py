"""Per-connection budgets: no single client may use more of the server than a conversation needs.

A client that sends audio 40 times faster than real time, or thousands of events a second,
would otherwise make the server score that audio and answer those events on the event loop
every session shares. Each is a token bucket: it holds up to ``burst`` units, refills at
``rate`` per second, and what would overdraw it is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cosyagent.agent.events import ProtocolError


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def spend(self, cost: float) -> bool:
        """Take ``cost`` units if the bucket holds them; False (and nothing taken) if not."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if cost > self._tokens:
            return False
        self._tokens -= cost
        return True


class InputAudioBudget:
    """Input audio at most ``speed`` times real time, after a burst of ``burst_s`` seconds."""

    def __init__(self, speed: float, burst_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._bucket = TokenBucket(speed, burst_s, clock)

    def refusal(self, seconds: float) -> ProtocolError | None:
        """None if ``seconds`` of audio fit the budget (and spend them), else why they are dropped."""
        if self._bucket.spend(seconds):
            return None
        return ProtocolError(
            f"input audio is arriving faster than {self._bucket.rate:g}x real time (after a"
            f" {self._bucket.burst:g} s burst): this {seconds:.2f} s of audio was dropped; send audio as it is spoken",
            code="input_audio_rate_exceeded",
            param="audio",
        )
