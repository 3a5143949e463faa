"""An aiortc caller for ``/v1/realtime/calls``: the client side of a WebRTC Realtime call.

- :class:`ClipMicrophone`, the audio track we send: it says the clips it is given in real
  time, else silence, as a live microphone would (a 20 ms frame leaves once its last sample
  has been "spoken"; sample ``n`` of the stream is spoken at ``t0 + n / 48000``), encoded as a
  browser sends it: mono Opus, and in silence nothing but a packet every 400 ms when the
  server's answer asks for DTX (``usedtx=1``), as Chrome's Opus encoder does.
- the ``oai-events`` data channel: every server event is kept with its arrival time.
- a recorder of the remote track (the agent's voice): every 20 ms frame is kept with its
  arrival time and loudness, so a driver can tell when the voice starts and stops. A frame is
  stamped when the packet after it arrives (20 ms later), as over the WebSocket a delta is
  stamped when it arrives: not after aiortc's 80 ms playout cushion, which stands for the
  listener's own jitter buffer, a cost of the client's network that neither driver counts.
  Its Opus is decoded on the caller's event loop, to mono, as the server decodes a caller's
  microphone, not on aiortc's decoder thread: the callers share the server's CPU, and every
  bit of theirs slows the server's LLM (docs/benchmarks.md).
- :func:`loopback_candidates`, for calls to a server on the same machine.

All times are ``time.monotonic()``. Used by the e2e tests and by the bench's WebRTC driver.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import httpx
import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, Packet

from cosyagent.transports.webrtc_audio import mono_frame, mono_opus_encoder, opus_packet
from cosyagent.transports.webrtc_microphone import decode_opus_here, release_audio_promptly

RATE = 48000  # what Opus carries
FRAME = 960  # 20 ms
FRAME_S = FRAME / RATE
# A received frame is voice when its RMS is above -70 dBFS. Between replies the server sends
# digital silence, which Opus decodes to exact zeros; the codec's edge frames (the one before a
# reply's first audible frame and the ones after its last) measure -100..-80 dBFS; the agent
# speaks at -40..-15 dBFS. So "voice" is audible reply audio, and a reply's first voiced frame
# is at most one frame (20 ms) after the first frame that carries any of it.
VOICE_RMS = 10 ** (-70 / 20)
# Opus's DTX as a browser's encoder does it: 200 ms of silence sent after speech, then one
# packet (comfort noise) every 400 ms until speech comes again.
DTX_HANGOVER_FRAMES = 10
DTX_UPDATE_FRAMES = 20
_USEDTX = re.compile(r"^a=fmtp:\d+ .*\busedtx=1\b", re.MULTILINE)

logger = logging.getLogger(__name__)


@contextmanager
def host_candidates(addresses: list[str] | None) -> Iterator[None]:
    """Offer only ``addresses`` as ICE host candidates while the block runs (``None``: keep
    aioice's own, but undo whatever the block changes). Process-wide."""
    original = aioice.ice.get_host_addresses
    if addresses is not None:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


def loopback_candidates() -> AbstractContextManager[None]:
    """aioice leaves 127.0.0.1 out of its host candidates; a call to a server in the same
    process needs it (and only it, so a test does not depend on the machine's network
    interfaces). Process-wide while the block runs."""
    return host_candidates(["127.0.0.1"])


class ClipMicrophone(MediaStreamTrack):
    """A microphone that says what it is given (float audio at 48 kHz), else silence."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending: deque[npt.NDArray[np.int16]] = deque()  # whole frames, not yet sent
        self._start: float | None = None  # t0: when sample 0 of the stream is spoken
        self._sent = 0  # frames sent so far (or skipped in DTX)
        self._quiet_frames = 0  # silent frames since the last speech
        self._opus = mono_opus_encoder()
        self.dtx = False  # send nothing in silence: set when the server's answer asks (usedtx=1)

    def say(self, audio_48k: npt.NDArray[np.float32]) -> float:
        """Queue speech after anything still queued, starting no sooner than now. Returns when
        its first sample is spoken (``time.monotonic()``), which is also when the server gets it
        (less the 20 ms framing and the network)."""
        now = time.monotonic()
        if self._start is None:  # not pulled yet: the stream starts now
            self._start = now
        queued_end = (self._sent + len(self._pending)) * FRAME
        begin = max(queued_end, math.ceil((now - self._start) * RATE))
        pcm = (np.clip(audio_48k, -1.0, 1.0) * 32767.0).astype(np.int16)
        pcm = np.concatenate([np.zeros(begin - queued_end, dtype=np.int16), pcm])
        pcm = np.concatenate([pcm, np.zeros(-pcm.size % FRAME, dtype=np.int16)])
        self._pending.extend(pcm.reshape(-1, FRAME))
        return self._start + begin / RATE

    @property
    def speaking(self) -> bool:
        return bool(self._pending)

    async def recv(self) -> Packet[Any] | AudioFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._start is None:
                self._start = time.monotonic()
            due = self._start + (self._sent + 1) * FRAME_S  # when its last sample has been spoken
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            pts = self._sent * FRAME
            self._sent += 1
            if self._pending:
                samples = self._pending.popleft()
                self._quiet_frames = 0
            else:
                samples = np.zeros(FRAME, dtype=np.int16)
                self._quiet_frames += 1
            if self.dtx and self._in_dtx_gap():
                continue
            return self._encoded(samples, pts)

    def _in_dtx_gap(self) -> bool:
        past_hangover = self._quiet_frames - DTX_HANGOVER_FRAMES
        return past_hangover > 0 and past_hangover % DTX_UPDATE_FRAMES != 0

    def _encoded(self, samples: npt.NDArray[np.int16], pts: int) -> Packet[Any] | AudioFrame:
        """One mono Opus packet, as a browser sends (aiortc's own encoder sends stereo, on a thread)."""
        return opus_packet(self._opus, mono_frame(samples.tobytes(), pts))


@dataclass
class HeardFrame:
    at: float  # arrival, time.monotonic()
    rms: float


@dataclass
class Caller:
    """One client-side call: the peer connection, its events and what it heard."""

    pc: RTCPeerConnection
    microphone: ClipMicrophone
    channel: RTCDataChannel
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    heard: list[HeardFrame] = field(default_factory=list)
    call_id: str = ""
    tasks_before: set[asyncio.Task[Any]] = field(default_factory=set)  # the event loop's, before the call
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)  # an event came
    _news: asyncio.Event = field(default_factory=asyncio.Event)  # an event or a frame came
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # --- events ------------------------------------------------------------------------

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e.get("type") == kind]

    def time_of(self, kind: str) -> float:
        return next(at for at, e in self.events if e.get("type") == kind)

    def send(self, event: dict[str, Any] | str) -> None:
        self.channel.send(event if isinstance(event, str) else json.dumps(event))

    async def wait_for(
        self,
        match: str | Callable[[dict[str, Any]], bool],
        timeout: float = 60.0,  # noqa: ASYNC109 - the tests' call shape: wait_for("kind", timeout=...)
    ) -> dict[str, Any]:
        """The first event (seen so far or still to come) of that type or matching that test.
        Raises AssertionError, listing what came, if none comes in ``timeout`` seconds."""
        test = match if callable(match) else (lambda e: e.get("type") == match)
        deadline = time.monotonic() + timeout
        while True:
            found = next((e for _, e in self.events if test(e)), None)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e.get("type") for _, e in self.events]
                raise AssertionError(f"no {match!r} event in {timeout} s; saw {seen}")
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def news(self, deadline: float) -> None:
        """Wait until an event or a frame arrives (a frame every 20 ms while the agent speaks;
        between replies the reply track sends nothing), or until ``deadline``. Cancel-safe."""
        self._news.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._news.wait(), max(0.0, deadline - time.monotonic()))

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), event))
        self._arrived.set()
        self._news.set()

    # --- the agent's voice ---------------------------------------------------------------

    def first_voice(self, after: float, before: float = math.inf, threshold: float = VOICE_RMS) -> float | None:
        """Arrival of the first voiced frame in [after, before), or None."""
        start = bisect.bisect_left(self.heard, after, key=lambda f: f.at)
        for frame in self.heard[start:]:
            if frame.at >= before:
                return None
            if frame.rms > threshold:
                return frame.at
        return None

    def last_voice(self, after: float, before: float = math.inf, threshold: float = VOICE_RMS) -> float | None:
        """Arrival of the last voiced frame in [after, before), or None."""
        start = bisect.bisect_left(self.heard, after, key=lambda f: f.at)
        end = bisect.bisect_left(self.heard, before, key=lambda f: f.at)
        return next((f.at for f in reversed(self.heard[start:end]) if f.rms > threshold), None)

    def voiced_seconds(self, after: float = 0.0, before: float = math.inf, threshold: float = 0.01) -> float:
        return sum(FRAME_S for f in self.heard if after <= f.at < before and f.rms > threshold)

    def _on_frame(self, frame: HeardFrame) -> None:
        self.heard.append(frame)
        self._news.set()

    # --- the call --------------------------------------------------------------------------

    async def close(self) -> None:
        """Hang up on our side: stop the recorder, the microphone and the peer connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.microphone.stop()
        await self.pc.close()


async def make_offer(with_audio: bool = True) -> tuple[Caller, str]:
    """A caller whose offer is ready to post (audio sendrecv + the oai-events channel)."""
    tasks_before = set(asyncio.all_tasks())
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    microphone = ClipMicrophone()
    if with_audio and not release_audio_promptly(pc.addTransceiver(microphone, direction="sendrecv").receiver):
        await pc.close()
        raise RuntimeError(
            "this aiortc's receiver has no jitter buffer to replace: the voice's arrival cannot be stamped"
        )
    channel = pc.createDataChannel("oai-events")
    caller = Caller(pc, microphone, channel, tasks_before=tasks_before)

    @channel.on("message")
    def on_message(message: str | bytes) -> None:
        caller._on_event(json.loads(message))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        # The remote track exists from here, and aiortc's decoder thread starts only once connected.
        receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
        if not decode_opus_here(receiver, fill_dtx=False):
            logger.warning("this aiortc's receiver keeps its own decoder thread for the agent's voice")
        caller._tasks.append(asyncio.create_task(_record(track, caller._on_frame), name="webrtc-caller-recorder"))

    try:
        await pc.setLocalDescription(await pc.createOffer())
    except BaseException:
        await caller.close()
        raise
    return caller, str(pc.localDescription.sdp)


async def accept_answer(caller: Caller, answer_sdp: str) -> None:
    caller.microphone.dtx = _USEDTX.search(answer_sdp) is not None
    await caller.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))


class CallRefused(Exception):
    """The server did not answer the offer with 201 and an SDP answer; ``status`` and ``code``
    (the error body's ``code``) say why, when the server answered at all."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def dial(url: str, *, timeout_s: float = 30.0) -> Caller:
    """Call the server at ``url`` (its base URL, e.g. ``http://127.0.0.1:8188/v1``) with a raw
    ``application/sdp`` offer; the call's session starts with the server's defaults. Returns
    the connected caller (the data channel may still be opening: wait for session.created)."""
    caller, offer = await make_offer()
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.post(
                f"{url.rstrip('/')}/realtime/calls", content=offer, headers={"Content-Type": "application/sdp"}
            )
        if response.status_code != 201:
            raise CallRefused(
                f"POST /realtime/calls answered {response.status_code}: {response.text[:300]}",
                status=response.status_code,
                code=_error_code(response),
            )
        caller.call_id = response.headers.get("location", "").rsplit("/", 1)[-1]
        await accept_answer(caller, response.text)
    except BaseException:
        await caller.close()
        raise
    return caller


def _error_code(response: httpx.Response) -> str | None:
    """The OpenAI-style error body's ``code``, if the response has one."""
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


async def hang_up(url: str, call_id: str, *, timeout_s: float = 10.0) -> int:
    """POST the call's hangup; returns the HTTP status (404 once the call is gone)."""
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        response = await http.post(f"{url.rstrip('/')}/realtime/calls/{call_id}/hangup")
    return response.status_code


async def _record(track: MediaStreamTrack, on_frame: Callable[[HeardFrame], None]) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, AudioFrame):
            continue
        at = time.monotonic()
        samples = frame.to_ndarray().astype(np.float32) / 32768.0
        on_frame(HeardFrame(at, float(np.sqrt(np.mean(samples**2)))))
