"""The playout alone: how far ahead of playback it releases a response's audio, against a
media sink's own clock or real time, and that a hold stops it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cosyagent.engines.base import AudioF32
from cosyagent.pipeline.playout import AudioSink, MediaAudioSink, Playout

CHUNK_MS = 100.0


class Source:
    """Planned audio in 100 ms chunks, as the core keeps it."""

    def __init__(self, chunks: int) -> None:
        self.pending = chunks
        self.sent = 0
        self.held = False

    def pending_audio_ms(self, response_id: str) -> float:
        return self.pending * CHUNK_MS

    def sent_audio_ms(self, response_id: str) -> float:
        return self.sent * CHUNK_MS

    def audio_on_hold(self) -> bool:
        return self.held

    def release(self) -> None:
        self.pending -= 1
        self.sent += 1


class Track(MediaAudioSink):
    def __init__(self) -> None:
        self.played = 0.0

    def push(self, response_id: str, samples: AudioF32, sample_rate: int) -> None:
        raise AssertionError("the playout releases; the session pushes")

    def finish(self, response_id: str) -> None: ...

    def clear(self) -> None: ...

    def hold(self) -> None: ...

    def resume(self) -> None: ...

    def played_ms(self, response_id: str) -> float:
        return self.played


class Client(AudioSink):
    def finish(self, response_id: str) -> None: ...

    def clear(self) -> None: ...

    def hold(self) -> None: ...

    def resume(self) -> None: ...


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_a_media_sink_is_fed_only_as_far_ahead_of_its_playback_as_the_lead() -> None:
    source, track = Source(chunks=30), Track()
    playout = Playout(source, track, "resp_1", lead_ms=300, release=source.release)
    runner = asyncio.create_task(playout.run())
    playout.wake()
    await until(lambda: source.sent == 4)  # 0..300 ms ahead of nothing played
    await asyncio.sleep(0.05)
    assert source.sent == 4
    track.played = 1000.0  # the track's clock, not the wall clock, says what has played
    await until(lambda: source.sent == 14)
    await asyncio.sleep(0.15)
    assert source.sent == 14
    source.held = True
    track.played = 2000.0
    playout.wake()
    await asyncio.sleep(0.15)
    assert source.sent == 14  # nothing leaves while held
    source.held = False
    playout.finish()
    track.played = 3000.0
    await asyncio.wait_for(runner, 1.0)
    assert source.pending == 0
    runner.cancel()


async def test_events_for_the_client_leave_at_real_time_plus_the_lead() -> None:
    source = Source(chunks=10)
    playout = Playout(source, Client(), "resp_1", lead_ms=300, release=source.release)
    began = time.monotonic()
    runner = asyncio.create_task(playout.run())
    playout.wake()
    await until(lambda: source.sent == 5)  # one more about every 100 ms
    assert source.sent <= 4 + (time.monotonic() - began) / 0.1 + 1
    await asyncio.wait_for(playout.until_unsent_at_most(200), 1.0)
    assert source.pending <= 2
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


def test_audio_ahead_is_what_the_listener_can_still_hear_the_deadline_of_the_next_clause() -> None:
    source, track = Source(chunks=5), Track()
    playout = Playout(source, track, "resp", lead_ms=300, release=source.release)
    assert playout.audio_ahead_ms() == 500  # nothing sent: all of it is still to hear
    source.release()
    source.release()
    track.played = 150.0
    assert playout.audio_ahead_ms() == 300 + (200 - 150)
    track.played = 400.0  # played past what was sent (a gap): nothing sent is still ahead
    assert playout.audio_ahead_ms() == 300
    source.held = True  # on hold the listener hears nothing: every sent chunk is still ahead
    assert playout.audio_ahead_ms() == 500
