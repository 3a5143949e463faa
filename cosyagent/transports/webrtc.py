"""`POST /v1/realtime/calls`: one Realtime session over a WebRTC peer connection (aiortc).

The OpenAI WebRTC flow: the caller's microphone track feeds the session's input buffer,
the reply is spoken on our audio track (Opus), and every other event travels as JSON on
the data channel the caller opens, named ``oai-events``, with the same schema and
behaviour as the WebSocket transport. Reply audio is never sent as
``response.output_audio.delta`` events: the session's core plays it on the track (its
sink), and the ``output_audio_buffer.*`` events say when it starts and stops;
``output_audio_buffer.clear`` cuts it off.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel
from av import AudioFrame

from cosyagent.agent.events import Event, new_id
from cosyagent.agent.session import RealtimeSession, SendEvent
from cosyagent.audio.pcm import AudioF32
from cosyagent.transports.base import ClearPlayback, ClientEvent, Inbound, MediaAudioSink, Serializer, json_event
from cosyagent.transports.webrtc_audio import PlaybackEvent, ReplyAudioTrack
from cosyagent.transports.webrtc_microphone import (
    MicrophoneConverter,
    asking_for_dtx,
    decode_opus_here,
    release_audio_promptly,
)
from cosyagent.transports.webrtc_offer import CallLimitError, CallNotFound, OfferError, check_offer, reachable_offer

logger = logging.getLogger(__name__)

TRANSPORT = "webrtc"  # its name in metrics and the session registry
EVENTS_CHANNEL = "oai-events"
_EARLY_EVENTS = 256  # events kept for a data channel that has not opened yet

SessionFactory = Callable[[MediaAudioSink, SendEvent], RealtimeSession]


class DataChannelEvents(Serializer[Inbound]):
    """JSON events on ``oai-events``, where ``output_audio_buffer.clear`` is the call's own."""

    def serialize(self, event: Event) -> list[str]:
        return [json_event(event)]

    def deserialize(self, message: str | bytes) -> Inbound:
        try:
            event = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return ClientEvent(message)  # the core answers it with a precise error
        if isinstance(event, dict) and event.get("type") == "output_audio_buffer.clear":
            return ClearPlayback()
        return ClientEvent(message)


class _TrackSink(MediaAudioSink):
    """The call's reply track as the session's sink; a clear tells the caller what it cut off."""

    def __init__(self, track: ReplyAudioTrack, on_cleared: Callable[[str], None]) -> None:
        self._track = track
        self._on_cleared = on_cleared

    def push(self, response_id: str, samples: AudioF32, sample_rate: int) -> None:
        self._track.push(response_id, samples, sample_rate)

    def finish(self, response_id: str) -> None:
        self._track.finish(response_id)

    def clear(self) -> None:
        cut = self._track.clear()
        if cut is not None:
            self._on_cleared(cut)

    def hold(self) -> None:
        self._track.hold()

    def resume(self) -> None:
        self._track.resume()

    def played_ms(self, response_id: str) -> float:
        return self._track.played_ms(response_id)


def ice_servers_from_config(servers: tuple[dict[str, Any], ...]) -> list[RTCIceServer]:
    return [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in servers]


class WebRTCCall:
    """One call: a peer connection, the session it carries, and the tasks between them.

    :meth:`answer` once, then :meth:`run` until the caller hangs up, the peer goes away or
    the connection never comes up; :meth:`run` always closes the peer connection.
    """

    def __init__(
        self, call_id: str, make_session: SessionFactory, ice_servers: list[RTCIceServer], connect_timeout_s: float
    ) -> None:
        self.id = call_id
        # An explicit list, even empty: left out, aiortc would contact Google's STUN server.
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
        self._connect_timeout_s = connect_timeout_s
        self._player = ReplyAudioTrack(self._on_playback)
        self._sink = _TrackSink(self._player, self._on_cleared)
        self._serializer = DataChannelEvents()
        self.session = make_session(self._sink, self._send)
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._channel: RTCDataChannel | None = None
        self._early: deque[str] = deque(maxlen=_EARLY_EVENTS)
        self._connected = asyncio.Event()
        self._microphone: MediaStreamTrack | None = None
        self._ended = False

    async def answer(self, offer_sdp: str) -> str:
        """Take the caller's offer and return our SDP answer (all candidates gathered)."""
        check_offer(offer_sdp)
        self._pc.on("datachannel", self._on_datachannel)
        self._pc.on("connectionstatechange", self._on_connection_state)
        try:
            offer = RTCSessionDescription(sdp=reachable_offer(offer_sdp), type="offer")
            await self._pc.setRemoteDescription(offer)
            audio = [t for t in self._pc.getTransceivers() if t.kind == "audio"]
            for transceiver in self._pc.getTransceivers():
                if transceiver is not audio[0]:
                    transceiver.direction = "inactive"  # one voice each way; no video
            if not release_audio_promptly(audio[0].receiver):
                logger.warning(
                    "this aiortc's receiver has no jitter buffer to replace: the caller's audio keeps its 80 ms"
                )
            if not decode_opus_here(audio[0].receiver, fill_dtx=True):
                logger.warning("this aiortc's receiver keeps its own decoder thread for the caller's audio")
            self._microphone = audio[0].receiver.track
            self._pc.addTrack(self._player)
            await self._pc.setLocalDescription(await self._pc.createAnswer())
        except (ValueError, OperationError, InvalidStateError, InvalidAccessError, InternalError) as exc:
            raise OfferError(f"the SDP offer was refused: {exc}") from exc
        return asking_for_dtx(str(self._pc.localDescription.sdp))

    def hang_up(self) -> None:
        """End the call (idempotent); :meth:`run` returns once everything is released."""
        if not self._ended:
            self._ended = True
            self._inbox.put_nowait(None)

    async def run(self) -> None:
        """Serve the call until it ends. Cancel-safe: the peer connection is closed either way."""
        microphone = asyncio.create_task(self._pump_microphone(), name=f"{self.id}-microphone")
        watchdog = asyncio.create_task(self._watch_connect(), name=f"{self.id}-connect-watchdog")
        try:
            await self.session.run(self._receive)
        finally:
            self.hang_up()
            try:
                for task in (microphone, watchdog):
                    task.cancel()
                await asyncio.gather(microphone, watchdog, return_exceptions=True)
            finally:
                await self.close()

    async def close(self) -> None:
        """Release the peer connection and the tracks (also after a refused offer)."""
        self._player.stop()
        await self._pc.close()
        self._early.clear()

    # --- media -----------------------------------------------------------------------

    async def _pump_microphone(self) -> None:
        if self._microphone is None:
            return
        converter = MicrophoneConverter()
        while True:
            try:
                frame = await self._microphone.recv()
            except MediaStreamError:
                return
            if isinstance(frame, AudioFrame):
                self.session.append_samples(converter.convert(frame))

    def _on_playback(self, event: PlaybackEvent, response_id: str) -> None:
        self._emit({"type": f"output_audio_buffer.{event}", "event_id": new_id("event"), "response_id": response_id})

    def _on_cleared(self, response_id: str) -> None:
        self._emit({"type": "output_audio_buffer.cleared", "event_id": new_id("event"), "response_id": response_id})

    # --- events ----------------------------------------------------------------------

    async def _send(self, event: Event) -> None:
        self._emit(event)

    def _emit(self, event: Event) -> None:
        (text,) = self._serializer.serialize(event)
        channel = self._channel
        if channel is None or channel.readyState == "connecting":
            self._early.append(text)
        elif channel.readyState == "open":
            channel.send(text)

    async def _receive(self) -> str | bytes | None:
        return await self._inbox.get()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL or self._channel is not None:
            logger.info("call %s: ignoring data channel %r", self.id, channel.label)
            return
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("close", self.hang_up)
        while self._early:
            channel.send(self._early.popleft())

    def _on_message(self, message: str | bytes) -> None:
        if self._ended:
            return
        inbound = self._serializer.deserialize(message)
        if isinstance(inbound, ClearPlayback):
            self._sink.clear()
        else:
            self._inbox.put_nowait(inbound.message)

    # --- connection ------------------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        logger.info("call %s: peer connection %s", self.id, state)
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self.hang_up()

    async def _watch_connect(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), self._connect_timeout_s)
        except TimeoutError:
            logger.info("call %s: no connection after %.0f s; ending it", self.id, self._connect_timeout_s)
            self.hang_up()


class CallRegistry:
    """The live calls of one server, each served by a task it keeps."""

    def __init__(self) -> None:
        self._calls: dict[str, WebRTCCall] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    async def open(
        self, offer_sdp: str, make_call: Callable[[str], WebRTCCall], on_end: Callable[[], None], *, max_calls: int
    ) -> tuple[str, str]:
        """Answer an offer and start serving the call; returns (call id, SDP answer).

        ``on_end`` runs once the call has ended and released everything (not when the
        offer is refused). Raises CallLimitError when full, OfferError for a bad offer."""
        if len(self._calls) >= max_calls:
            raise CallLimitError(f"the server is at its limit of {max_calls} calls; try again later")
        call = make_call(new_id("rtc"))
        self._calls[call.id] = call  # holds the slot while the answer is prepared
        try:
            answer = await call.answer(offer_sdp)
        except BaseException:
            self._calls.pop(call.id, None)
            await call.close()
            raise
        self._tasks[call.id] = asyncio.create_task(self._serve(call, on_end), name=f"call-{call.id}")
        return call.id, answer

    async def _serve(self, call: WebRTCCall, on_end: Callable[[], None]) -> None:
        try:
            await call.run()
        except Exception:
            logger.exception("call %s crashed", call.id)
        finally:
            self._calls.pop(call.id, None)
            self._tasks.pop(call.id, None)
            on_end()

    async def hang_up(self, call_id: str) -> None:
        """End a call and wait until it has released everything. Raises CallNotFound."""
        call, task = self._calls.get(call_id), self._tasks.get(call_id)
        if call is None or task is None:
            raise CallNotFound(f"no active call {call_id!r}")
        call.hang_up()
        await asyncio.shield(task)

    async def close_all(self, timeout_s: float = 10.0) -> None:
        """Server shutdown: end every call, cancelling any that will not end in time."""
        tasks = list(self._tasks.values())
        for call in list(self._calls.values()):
            call.hang_up()
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
