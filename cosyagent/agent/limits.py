"""What one Realtime session may ask of the server: the bounds its core enforces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CoreLimits:
    max_event_bytes: int = 1 << 20  # one client event; larger ones are refused
    max_append_bytes: int = 512 * 1024  # decoded audio in one input_audio_buffer.append
    max_buffer_seconds: float = 120.0  # uncommitted input audio kept
    max_context_items: int = 20  # conversation items the LLM sees
    # Input audio may arrive at most this many times faster than real time, after a burst of
    # this many seconds (a recorded utterance sent at once); the excess is refused.
    max_input_audio_speed: float = 1.5
    input_audio_burst_seconds: float = 60.0
    max_pending_transcripts: int = 4  # manual commits still being transcribed
    max_events_per_second: float = 100.0  # client events, after a burst of twice as many


DEFAULT_LIMITS = CoreLimits()
