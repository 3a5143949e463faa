"""The WebRTC transport's parts without a network: the reply track, the microphone
converter, offer checks, formats on media tracks, and RealtimeSession.append_audio."""

from __future__ import annotations

import asyncio
import fractions
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioice.ice
import numpy as np
import pytest
import yaml
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from av import AudioFrame, CodecContext, Packet

from benchmarks.webrtc_caller import (
    DTX_HANGOVER_FRAMES,
    DTX_UPDATE_FRAMES,
    accept_answer,
    host_candidates,
    make_offer,
)
from cosyagent.agent.events import Event, Send
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.agent.session import RealtimeSession, SessionEngines
from cosyagent.agent.session_config import SessionConfig
from cosyagent.config import DEFAULT_CONFIG, ConfigError, WebRTCConfig
from cosyagent.engines.vad import SileroVAD
from cosyagent.transports.webrtc import WebRTCCall, ice_servers_from_config
from cosyagent.transports.webrtc_audio import (
    FRAME_SAMPLES,
    SILENCE_HANGOVER_FRAMES,
    ReplyAudioTrack,
    mono_frame,
    mono_opus_encoder,
)
from cosyagent.transports.webrtc_microphone import FILL_AFTER_S, MicrophoneConverter
from cosyagent.transports.webrtc_offer import OfferError, check_offer, limit_host_addresses, reachable_offer
from cosyagent.transports.websocket import ClientPlayback
from tests.e2e.webrtc_client import loopback_candidates
from tests.support import pcm16, read_clip


def tone_24k(seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(24000 * seconds)) / 24000
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def tone_48k_pcm16(seconds: float) -> np.ndarray:
    """A 440 Hz tone at half scale, as a caller's 48 kHz int16 samples."""
    t = np.arange(int(48000 * seconds)) / 48000
    return (0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def frame_rms(frame: AudioFrame) -> float:
    samples = frame.to_ndarray().astype(np.float32) / 32768
    return float(np.sqrt(np.mean(samples**2)))


class Listener:
    """Hears the reply track as a caller would: decodes the Opus packets it hands aiortc."""

    def __init__(self, track: ReplyAudioTrack) -> None:
        self.track = track
        self.decoder = CodecContext.create("libopus", "r")
        self.decoder.format = "s16"
        self.decoder.layout = "mono"
        self.decoder.sample_rate = 48000

    async def next(self) -> tuple[Packet[Any], AudioFrame]:
        packet = await self.track.recv()
        assert isinstance(packet, Packet), "the track hands aiortc encoded packets"
        [frame] = self.decoder.decode(packet)
        return packet, frame

    async def rms(self) -> float:
        return frame_rms((await self.next())[1])


class Playback:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, event: str, response_id: str) -> None:
        self.events.append((event, response_id))


async def test_reply_track_plays_queued_audio_in_20ms_packets_then_silence() -> None:
    playback = Playback()
    track = ReplyAudioTrack(playback)
    listener = Listener(track)
    track.push("resp_1", tone_24k(0.1), 24000)
    track.finish("resp_1")
    heard = []
    while ("stopped", "resp_1") not in playback.events:
        heard.append(await listener.next())
    assert track.played_ms("resp_1") >= 100
    heard += [await listener.next() for _ in range(3)]
    assert [packet.pts for packet, _ in heard] == [i * FRAME_SAMPLES for i in range(len(heard))]
    assert all(packet.time_base == fractions.Fraction(1, 48000) for packet, _ in heard)
    assert all(frame.samples == FRAME_SAMPLES for _, frame in heard[1:])  # the first loses Opus's lookahead
    voiced = [frame_rms(frame) > 0.1 for _, frame in heard]
    # Opus's 6.5 ms lookahead carries the tone's end into the first silent packet.
    assert voiced[:4] == [True] * 4 and voiced[-2:] == [False] * 2
    assert playback.events == [("started", "resp_1"), ("stopped", "resp_1")]
    track.stop()


async def test_reply_track_is_paced_by_the_wall_clock() -> None:
    track = ReplyAudioTrack(Playback())
    track.push("resp_1", tone_24k(0.3), 24000)
    began = time.monotonic()
    for _ in range(11):
        await track.recv()
    assert 0.17 <= time.monotonic() - began < 0.6  # ten 20 ms steps after the first frame
    track.stop()


async def test_clearing_the_reply_track_cuts_the_response_off_at_once() -> None:
    playback = Playback()
    track = ReplyAudioTrack(playback)
    listener = Listener(track)
    track.push("resp_1", tone_24k(1.0), 24000)
    await listener.next()
    assert track.clear() == "resp_1"
    await listener.next()  # Opus's lookahead: the last 6.5 ms of the tone
    assert await listener.rms() < 0.01
    assert track.clear() is None  # nothing left to cut
    # A later response starts cleanly.
    track.push("resp_2", tone_24k(0.2), 24000)
    track.finish("resp_2")
    while ("stopped", "resp_2") not in playback.events:
        await listener.next()
    assert playback.events == [("started", "resp_1"), ("started", "resp_2"), ("stopped", "resp_2")]
    track.stop()


async def test_a_held_reply_track_plays_silence_and_keeps_its_audio() -> None:
    playback = Playback()
    track = ReplyAudioTrack(playback)
    listener = Listener(track)
    track.push("resp_1", tone_24k(0.2), 24000)
    track.finish("resp_1")
    assert await listener.rms() > 0.1
    track.hold()
    held = [await listener.rms() for _ in range(3)]
    assert max(held[1:]) < 0.01  # the first carries the tone's last 6.5 ms
    assert track.played_ms("resp_1") == 20
    track.resume()
    await listener.next()  # Opus's lookahead: the hold's last 6.5 ms
    assert await listener.rms() > 0.1
    track.stop()


async def test_after_a_short_silence_the_reply_track_sends_nothing_until_there_is_audio() -> None:
    playback = Playback()
    track = ReplyAudioTrack(playback)
    listener = Listener(track)
    silence = [await listener.next() for _ in range(SILENCE_HANGOVER_FRAMES)]
    assert max(frame_rms(frame) for _, frame in silence) < 0.01
    waiting = asyncio.ensure_future(listener.next())
    await asyncio.sleep(0.3)
    assert not waiting.done(), "no packets in a silence past the hangover"
    queued = time.monotonic()
    track.push("resp_1", tone_24k(0.2), 24000)
    packet, _ = await asyncio.wait_for(waiting, 1)
    assert time.monotonic() - queued < 0.1, "a reply's first packet leaves at once, not on a later beat"
    assert playback.events == [("started", "resp_1")]
    # Its timestamp counts the silence, so the caller plays it after that gap, not right after the last packet.
    gap_s = (packet.pts - silence[-1][0].pts) / 48000
    assert 0.3 <= gap_s < 0.5
    later = [await listener.next() for _ in range(3)]
    assert [p.pts for p, _ in later] == [packet.pts + (i + 1) * FRAME_SAMPLES for i in range(3)]
    assert min(frame_rms(frame) for _, frame in later) > 0.1
    track.stop()


async def test_a_reply_held_past_the_hangover_resumes_when_released_and_stop_ends_a_wait() -> None:
    track = ReplyAudioTrack(Playback())
    listener = Listener(track)
    track.push("resp_1", tone_24k(0.5), 24000)
    assert await listener.rms() > 0.1
    track.hold()
    for _ in range(SILENCE_HANGOVER_FRAMES):
        await listener.next()
    waiting = asyncio.ensure_future(listener.next())
    await asyncio.sleep(0.1)
    assert not waiting.done()
    track.resume()
    await asyncio.wait_for(waiting, 1)  # Opus's lookahead: the silence's last 6.5 ms
    assert await listener.rms() > 0.1
    track.clear()
    for _ in range(SILENCE_HANGOVER_FRAMES):
        await listener.next()
    waiting = asyncio.ensure_future(listener.next())
    await asyncio.sleep(0.05)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1)


async def test_microphone_frames_become_float_mono_at_16khz() -> None:
    converter = MicrophoneConverter()
    tone = tone_48k_pcm16(0.02)
    stereo = np.repeat(tone, 2).reshape(1, -1)  # 20 ms at 48 kHz, interleaved stereo
    chunks = []
    for index in range(10):
        frame = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = index * 960
        frame.time_base = fractions.Fraction(1, 48000)
        chunks.append(converter.convert(frame))
    out = np.concatenate(chunks)
    assert out.dtype == np.float32
    assert abs(out.size - 10 * 320) <= 320  # 200 ms at 16 kHz, less the resampler's delay
    assert 0.45 < np.abs(out).max() <= 0.55  # the tone's level, as the caller sent it


def held_back_frames(receiver: Any, packets: int = 6) -> int:
    """How many 20 ms packets a receiver's jitter buffer takes in before it gives out the first frame."""
    buffer = receiver._RTCRtpReceiver__jitter_buffer  # aiortc's own, or ours
    for index in range(packets):
        packet = RtpPacket(payload_type=111, sequence_number=index, timestamp=960 * index, payload=b"x")
        packet._data = packet.payload  # type: ignore[attr-defined]  # set by aiortc's receiver before the buffer
        if buffer.add(packet)[1] is not None:
            return index
    return packets


async def test_a_calls_microphone_reaches_turn_detection_one_frame_after_it_arrives() -> None:
    """aiortc holds each audio frame until four more have come (80 ms on every turn's end and
    barge-in); a call's microphone gives each out when the next packet arrives."""
    plain = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    plain.addTransceiver("audio", direction="recvonly")
    call = WebRTCCall("rtc_test", lambda sink, send: None, [], 5.0)  # type: ignore[arg-type,return-value]
    try:
        await call.answer(await offer_sdp())
        [audio] = [t for t in call._pc.getTransceivers() if t.kind == "audio"]
        assert held_back_frames(plain.getTransceivers()[0].receiver) == 4
        assert held_back_frames(audio.receiver) == 1
    finally:
        await plain.close()
        await call.close()


def opus_packets(tone: np.ndarray) -> list[bytes]:
    """``tone`` (48 kHz mono int16) as 20 ms Opus packets, as a caller sends them."""
    encoder = mono_opus_encoder()
    packets = []
    for index in range(tone.size // 960):
        frame = mono_frame(tone[index * 960 : (index + 1) * 960].tobytes(), index * 960)
        packets += [bytes(packet) for packet in encoder.encode(frame)]
    return packets


def queued_frames(receiver: Any) -> list[AudioFrame]:
    """What the call's microphone track has been given so far (taken off its queue)."""
    track_queue = receiver.track._queue
    return [track_queue.get_nowait() for _ in range(track_queue.qsize())]


def levels(frames: list[AudioFrame]) -> list[tuple[int, bool]]:
    """Each frame's length and whether it carries sound, runs of alike frames merged."""
    runs: list[tuple[int, bool]] = []
    for frame in frames:
        loud = bool(np.abs(frame.to_ndarray()).max() > 300)
        if runs and runs[-1][1] == loud:
            runs[-1] = (runs[-1][0] + frame.samples, loud)
        else:
            runs.append((frame.samples, loud))
    return runs


OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


@asynccontextmanager
async def answered_call() -> AsyncIterator[tuple[str, Any, Any]]:
    """A call that has answered an offer: its SDP answer, its microphone's receiver, and the
    queue aiortc's receiver puts each jitter-buffered frame on (``(codec, JitterFrame)``)."""
    call = WebRTCCall("rtc_test", lambda sink, send: None, [], 5.0)  # type: ignore[arg-type,return-value]
    try:
        answer = await call.answer(await offer_sdp())
        [audio] = [t for t in call._pc.getTransceivers() if t.kind == "audio"]
        yield answer, audio.receiver, audio.receiver._RTCRtpReceiver__decoder_queue
    finally:
        await call.close()


def put_packets(decoder_queue: Any, packets: list[bytes], first: int = 0) -> None:
    """``packets`` as received Opus frames, 20 ms apart on the RTP clock from frame ``first`` on."""
    for index, payload in enumerate(packets, start=first):
        decoder_queue.put((OPUS, JitterFrame(data=payload, timestamp=index * 960)))


async def test_a_calls_microphone_is_decoded_on_the_event_loop_to_mono_and_other_codecs_go_to_aiortc(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with answered_call() as (_, receiver, decoder_queue):
        tone = tone_48k_pcm16(0.2)
        put_packets(decoder_queue, opus_packets(tone))
        frames = queued_frames(receiver)  # at once, no thread
        assert len(frames) == 10
        assert all(f.sample_rate == 48000 and f.layout.name == "mono" for f in frames)
        assert all(f.samples == 960 for f in frames[1:])  # 20 ms each; the first loses Opus's pre-skip
        level = np.abs(np.concatenate([f.to_ndarray().ravel() for f in frames[2:]]) / 32768).max()
        assert 0.4 < level < 0.6  # the tone's level, as the caller sent it
        assert decoder_queue.empty()
        # A damaged packet is skipped with a warning; the next one still decodes.
        decoder_queue.put((OPUS, JitterFrame(data=b"\xff\xff\xff", timestamp=0)))
        assert "failed to decode" in caplog.text
        put_packets(decoder_queue, opus_packets(tone)[:1])
        assert receiver.track._queue.qsize() == 1
        # PCMU (and the stop signal) go to aiortc's own decoder thread, as before.
        pcmu = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0)
        decoder_queue.put((pcmu, JitterFrame(data=bytes(160), timestamp=0)))
        assert decoder_queue.get_nowait()[0] is pcmu


async def test_a_callers_dtx_silence_is_filled_in_at_the_wall_clocks_pace_and_speech_lands_on_its_timestamp() -> None:
    """A browser asked for DTX (the answer's usedtx=1) sends nothing while its user is silent
    but a packet every 400 ms: turn detection still gets a continuous stream, in real time."""
    async with answered_call() as (answer, receiver, decoder_queue):
        assert re.search(r"a=fmtp:\d+ .*usedtx=1", answer)  # the browser is asked for DTX
        check_offer(answer.replace("a=setup:active", "a=setup:actpass"))  # and the answer still parses
        # What the caller says: 200 ms of speech, silence, speech again (one encoder, as a browser's).
        said = np.concatenate([tone_48k_pcm16(0.2), np.zeros(960 * 30, dtype=np.int16), tone_48k_pcm16(0.1)])
        packets = opus_packets(said)
        # The speech and the 200 ms of silence after it (the DTX hangover) arrive ...
        put_packets(decoder_queue, packets[:20])
        last_arrival = time.monotonic()
        head = queued_frames(receiver)
        assert levels(head)[0][1] and sum(f.samples for f in head) <= 20 * 960
        await asyncio.sleep(0.4)  # ... then, in DTX, nothing
        since = time.monotonic() - last_arrival
        filled = queued_frames(receiver)
        assert [loud for _, loud in levels(filled)] == [False]
        assert since - 0.1 <= sum(f.samples for f in filled) / 48000 <= since  # real time, a frame or two behind
        # A comfort-noise packet for time already filled is dropped. Speech then comes on its
        # timestamp, the time between filled with silence: the stream keeps the caller's clock.
        speaking = 20 + math.ceil(since * 50) + 2  # the frame the caller speaks now (a loaded machine: later)
        put_packets(decoder_queue, [packets[30]], first=25)
        put_packets(decoder_queue, [packets[40]], first=speaking)
        tail = queued_frames(receiver)
        assert [loud for _, loud in levels(tail)] == [False, True]
        total = sum(f.samples for f in head + filled + tail)
        assert total == (speaking + 1) * 960 - (960 - head[0].samples)  # the first frame may lose Opus's pre-skip


async def test_a_pause_in_the_packets_after_speech_is_waited_for_not_filled() -> None:
    """Packets that stop after a loud frame are the network or a loaded machine, not DTX."""
    async with answered_call() as (_, receiver, decoder_queue):
        speech = opus_packets(tone_48k_pcm16(0.2))
        put_packets(decoder_queue, speech[:5])
        await asyncio.sleep(FILL_AFTER_S * 3)
        put_packets(decoder_queue, speech[5:], first=5)  # late, and all at once
        assert [loud for _, loud in levels(queued_frames(receiver))] == [True]


async def test_the_bench_caller_sends_as_a_browser_in_dtx_silence_a_packet_every_400ms() -> None:
    caller, _ = await make_offer()
    microphone = caller.microphone
    try:
        microphone.dtx = True  # as accept_answer sets it when the answer says usedtx=1
        microphone.say(np.full(960 * 5, 0.3, dtype=np.float32))
        sent = []
        for _ in range(5 + DTX_HANGOVER_FRAMES + 1):  # the speech, the hangover, the first update
            sent.append(await asyncio.wait_for(microphone.recv(), 2))
        assert all(isinstance(packet, Packet) for packet in sent)  # encoded here, mono
        frames = [packet.pts // 960 for packet in sent]
        assert frames == [*range(5 + DTX_HANGOVER_FRAMES), 5 + DTX_HANGOVER_FRAMES + DTX_UPDATE_FRAMES - 1]
    finally:
        await caller.close()


async def test_the_bench_caller_hears_the_agents_voice_one_frame_after_it_arrives() -> None:
    """The bench stamps reply audio on arrival, as over the WebSocket, not after aiortc's 80 ms."""
    caller, _ = await make_offer()
    try:
        [audio] = [t for t in caller.pc.getTransceivers() if t.kind == "audio"]
        assert held_back_frames(audio.receiver) == 1
    finally:
        await caller.close()


async def test_the_bench_caller_decodes_the_agents_voice_on_its_event_loop_frame_by_frame() -> None:
    """The callers share the server's cores, so they hear the agent as the server hears a caller:
    Opus decoded where it arrives, to mono, no thread; and nothing filled in while the reply
    track sends nothing (the recorder stamps what arrives)."""
    with loopback_candidates():
        caller, offer = await make_offer()
        call = WebRTCCall("rtc_test", lambda sink, send: None, [], 5.0)  # type: ignore[arg-type,return-value]
        try:
            await accept_answer(caller, await call.answer(offer))
            [audio] = [t for t in caller.pc.getTransceivers() if t.kind == "audio"]
            decoder_queue = audio.receiver._RTCRtpReceiver__decoder_queue
            # A reply's last 200 ms and 100 ms of silence after it, put as aiortc's receiver puts them.
            put_packets(decoder_queue, opus_packets(np.concatenate([tone_48k_pcm16(0.2), np.zeros(4800, np.int16)])))
            assert audio.receiver.track._queue.qsize() >= 15  # decoded as put, not on aiortc's thread
            await asyncio.sleep(0.05)  # the recorder takes them off the track's queue
            assert sum(frame.rms > 0.25 for frame in caller.heard) in (9, 10)  # the call's own packets are silence
            # The call's reply track sends 200 ms of silence, then nothing: nor does the caller hear more.
            for _ in range(40):
                before = len(caller.heard)
                await asyncio.sleep(FILL_AFTER_S * 3)
                if len(caller.heard) == before:
                    break
            assert len(caller.heard) == before, "the caller makes up frames the agent never sent"
        finally:
            await caller.close()
            await call.close()


async def offer_sdp(audio: bool = True) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if audio:
            pc.addTransceiver("audio", direction="sendrecv")
        pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_a_good_offer_passes() -> None:
    description = check_offer(await offer_sdp())
    assert [m.kind for m in description.media] == ["audio", "application"]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda sdp: "", "empty"),
        (lambda sdp: "hello", "must start with 'v=0'"),
        (lambda sdp: sdp.replace("a=sendrecv", "a=inactive"), "inactive"),
        (lambda sdp: re.sub(r"(a=rtpmap:\d+ )\w+", r"\1x-unknown", sdp), "codec"),
        (lambda sdp: "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=ice-pwd")), "ICE"),
        (
            lambda sdp: "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=fingerprint")),
            "fingerprint",
        ),
        (lambda sdp: sdp + "a=x" * 70000, "bytes"),
        (lambda sdp: "v=0\r\ngarbage\r\n" + sdp[5:], "line 2 of the SDP offer is not '<type>=<value>'"),
        (lambda sdp: "v=0\r\nm=audio x", "could not be parsed ("),  # aiortc's own refusal, named
    ],
)
async def test_bad_offers_are_refused_with_a_reason(mangle: Any, reason: str) -> None:
    with pytest.raises(OfferError) as refused:
        check_offer(mangle(await offer_sdp()))
    assert reason in refused.value.message


async def test_an_offer_without_audio_is_refused() -> None:
    with pytest.raises(OfferError, match="no audio section"):
        check_offer(await offer_sdp(audio=False))


def test_audio_formats_do_not_apply_on_media_tracks() -> None:
    vad = SileroVAD()
    vad.load()
    core = RealtimeCore(
        SessionConfig(model="test", instructions="", voice="jf_alpha"),
        vad=vad.new_stream(),
        tts_sample_rate=24000,
        voice_exists=lambda voice: voice == "v",
        audio_on_media_tracks=True,
    )
    update = {
        "type": "session.update",
        "session": {
            "instructions": "x",
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"format": {"type": "audio/pcma"}, "voice": "v"},
            },
        },
    }
    (updated,) = [a.event for a in core.receive(update) if isinstance(a, Send)]
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] == "x"
    audio = updated["session"]["audio"]
    assert audio["input"]["format"] == audio["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["output"]["voice"] == "v"
    assert update["session"]["audio"]["input"] == {"format": {"type": "audio/pcmu"}}  # the client's JSON, untouched
    create = {"type": "response.create", "response": {"audio": {"output": {"format": {"type": "audio/pcmu"}}}}}
    (created,) = [
        a.event for a in core.receive(create) if isinstance(a, Send) and a.event["type"] == "response.created"
    ]
    assert created["response"]["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}


async def test_session_append_audio_drives_turn_detection() -> None:
    vad = SileroVAD()
    vad.load()
    core = RealtimeCore(
        SessionConfig(model="test", instructions="", voice="jf_alpha"),
        vad=vad.new_stream(),
        tts_sample_rate=24000,
        voice_exists=lambda voice: True,
    )
    sent: list[Event] = []

    async def send(event: Event) -> None:
        sent.append(event)

    inbox: asyncio.Queue[str | None] = asyncio.Queue()
    engines = SessionEngines(asr=None, llm=None, tts=None)  # type: ignore[arg-type]  # no turn ends here
    session = RealtimeSession(core, engines, send, output_lead_ms=300, sink=ClientPlayback())
    runner = asyncio.create_task(session.run(inbox.get))
    await asyncio.sleep(0)  # run() has started: session.created is out
    speech = pcm16(read_clip("en_dublin_q.wav", 24000)[: 24000 * 2])  # 2 s: the turn starts, does not end
    for offset in range(0, len(speech), 960):
        session.append_audio(speech[offset : offset + 960])
    session.append_audio(b"\x00")  # odd bytes: an error event, the session goes on
    await asyncio.sleep(0.1)
    await inbox.put(None)
    await asyncio.wait_for(runner, 5)
    kinds = [e["type"] for e in sent]
    assert kinds[0] == "session.created"
    assert "input_audio_buffer.speech_started" in kinds
    assert any(e["type"] == "error" and e["error"]["code"] == "invalid_audio" for e in sent)


def test_ice_servers_come_from_config_and_are_checked() -> None:
    assert ice_servers_from_config(()) == []  # an explicit empty list: aiortc contacts no STUN server
    (turn,) = ice_servers_from_config(({"urls": ["turn:t.example:3478"], "username": "u", "credential": "p"},))
    assert (turn.urls, turn.username, turn.credential) == (["turn:t.example:3478"], "u", "p")
    shipped = yaml.safe_load(DEFAULT_CONFIG.read_text())["webrtc"]
    assert shipped["ice_servers"] == [] and WebRTCConfig(**{**shipped, "ice_servers": ()}).max_calls >= 1
    for bad in ({"url": "stun:x"}, {"urls": 3}, {"urls": "stun:x", "password": "p"}, "stun:x"):
        with pytest.raises(ConfigError):
            WebRTCConfig(ice_servers=(bad,))  # type: ignore[arg-type]


OFFER_CANDIDATES = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "a=candidate:1 1 udp 2122260223 192.0.2.2 50000 typ host\r\n"
    "a=candidate:2 1 udp 2122260222 127.0.0.1 50001 typ host\r\n"
    "a=candidate:3 1 udp 2122260221 fd00::2 50002 typ host\r\n"
    "a=candidate:4 1 udp 2122260220 5f1c1d2e-1234.local 50003 typ host\r\n"
    "a=candidate:5 1 udp 2122260219 ::1 50004 typ host\r\n"
)


def test_a_loopback_server_drops_the_callers_other_candidates() -> None:
    with loopback_candidates():
        kept = reachable_offer(OFFER_CANDIDATES)
    candidates = [line.split()[4] for line in kept.split("\r\n") if line.startswith("a=candidate:")]
    assert candidates == ["127.0.0.1", "::1"]  # no check is ever sent to another interface
    assert kept.startswith("v=0\r\n") and "m=audio" in kept
    with host_candidates(["127.0.0.1", "192.0.2.2"]):  # not loopback only: the offer is left alone
        assert reachable_offer(OFFER_CANDIDATES) == OFFER_CANDIDATES


def test_the_configured_host_addresses_are_the_only_candidates() -> None:
    with host_candidates(None):
        limit_host_addresses(["127.0.0.1"])
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        limit_host_addresses([])  # nothing configured: nothing changes
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
