"""Cutting long audio at its pauses, for recognizers that take a bounded window."""

from __future__ import annotations

import numpy as np

from cosyagent.audio.pcm import AudioF32

PAUSE_SEARCH_S = 8.0


def split_at_pauses(
    audio: AudioF32, rate: int, window_s: float, search_s: float = PAUSE_SEARCH_S
) -> list[tuple[int, int]]:
    """Cut ``audio`` into spans of at most ``window_s``, each cut at the quietest 200 ms
    of the last ``search_s`` (at most half the window) before the limit: a pause between words, usually."""
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    search_s = min(search_s, window_s / 2)
    frame = max(1, rate // 50)  # 20 ms
    spans: list[tuple[int, int]] = []
    start = 0
    while audio.size - start > window_s * rate:
        low = start + int((window_s - search_s) * rate)
        high = start + int(window_s * rate)
        frames = (high - low) // frame
        energy = np.square(audio[low : low + frames * frame].reshape(frames, frame)).mean(axis=1)
        smooth = np.convolve(energy, np.ones(10) / 10, mode="same")
        cut = low + int(np.argmin(smooth)) * frame + frame // 2
        spans.append((start, cut))
        start = cut
    spans.append((start, audio.size))
    return spans
