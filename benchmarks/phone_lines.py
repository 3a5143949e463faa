"""The caller's side of a call, for benchmarks/phone.py: a line that sends the caller's audio
as 20 ms frames in real time (silence between utterances, as a phone does) and stamps every
20 ms of the agent's audio as it arrives. Three lines, all on 127.0.0.1 only:

- :class:`WsLine`: the Realtime WebSocket through the ``openai`` SDK (the reference figure).
- :class:`TwilioLine`: Twilio's bidirectional Media Streams protocol over a websockets client
  (``connected``, ``start``, base64 μ-law ``media`` in; ``media``, ``mark``, ``clear`` out). Like
  Twilio, it plays the agent's audio from a buffer in real time and echoes each ``mark`` once the
  audio before it has played; a ``clear`` empties the buffer and echoes the marks it dropped.
- :class:`SipLine`: a real INVITE / 200 OK / ACK exchange on a UDP socket, then RTP (PCMU, or
  G.722 through PyAV, independently of the server's codec) from a socket of its own; BYE at the end.

What "heard" means: a frame of the agent's audio whose RMS is above :data:`VOICED_RMS`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import websockets

from cosyagent.audio.pcm import AudioF32, float_to_pcm16, ulaw_decode, ulaw_encode
from cosyagent.talk import connect
from cosyagent.transports.rtp import RtpPacket, parse_rtp

FRAME_S = 0.02
FRAME_BYTES = 160  # 20 ms of μ-law or G.722 (64 kbit/s)
PCM_FORMATS = {"pcm24": {"type": "audio/pcm", "rate": 24000}, "pcmu": {"type": "audio/pcmu"}}
VOICED_RMS = 0.01  # a reply frame louder than this (full scale 1.0) is speech, not silence


@dataclass
class Heard:
    """What the caller received: (arrival time, voiced) per 20 ms frame, and carrier clears."""

    frames: list[tuple[float, bool]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)

    def first_voice_after(self, at: float) -> float | None:
        return next((t for t, voiced in self.frames if voiced and t >= at), None)

    def last_voice(self) -> float | None:
        return next((t for t, voiced in reversed(self.frames) if voiced), None)


def g722_encode(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> bytes:
    """16 kHz pcm16 as G.722 (PyAV's encoder), in 20 ms frames (the last one padded with silence)."""
    encoder: Any = av.CodecContext.create("g722", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 16000, "mono", "s16"
    encoder.open()
    padded = np.concatenate([pcm, np.zeros(-pcm.size % 320, dtype=np.int16)])
    out = bytearray()
    for start in range(0, padded.size, 320):
        frame = av.AudioFrame.from_ndarray(padded[None, start : start + 320], format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in encoder.encode(frame):
            out += bytes(packet)
    return bytes(out)


class Codec:
    """The caller's codec: ``pcmu`` (8 kHz), ``g722`` (16 kHz audio, 8000 RTP clock) or
    ``pcm24`` (the Realtime API's default pcm16 at 24 kHz)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rate = {"g722": 16000, "pcm24": 24000}.get(name, 8000)
        self.frame_bytes = 960 if name == "pcm24" else 160  # 20 ms
        self.payload_type = 9 if name == "g722" else 0
        self._decoder: Any = None
        if name == "g722":
            self._decoder = av.CodecContext.create("g722", "r")
            self._decoder.sample_rate, self._decoder.layout = 16000, "mono"
            self._decoder.open()

    def encode(self, audio: AudioF32) -> bytes:
        pcm = np.frombuffer(float_to_pcm16(audio), dtype="<i2")
        if self.name == "pcmu":
            return ulaw_encode(pcm)
        if self.name == "pcm24":
            return pcm.tobytes()
        return g722_encode(pcm)

    def voiced(self, payload: bytes) -> bool:
        if self.name == "pcmu":
            pcm = ulaw_decode(payload)
        elif self.name == "pcm24":
            pcm = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
        else:
            frames = self._decoder.decode(av.Packet(payload))
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(1, np.int16)
        samples = pcm.astype(np.float64) / 32768.0
        return bool(np.sqrt(np.mean(samples**2)) > VOICED_RMS)

    @property
    def silence(self) -> bytes:
        return self.encode(np.zeros(int(self.rate * FRAME_S), np.float32))


class Line:
    """One call's caller: :meth:`say` queues audio (in the line's codec) that the pump sends
    as 20 ms frames on a real-time clock, silence when nothing is queued. Frame ``i`` leaves
    when its last sample has been "spoken" (``start + (i + 1) * 20 ms``), as from a real phone
    or microphone; the future :meth:`say` returns resolves to the wall-clock time
    (``time.monotonic()``) of the utterance's first sample. Subclasses send a frame and feed
    :attr:`heard`."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.heard = Heard()
        self._queue = bytearray()
        self._said: list[tuple[int, asyncio.Future[float]]] = []  # (start offset, when its first sample was)
        self._sent = 0  # bytes of audio sent (speech and silence) from the queue
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        """Start the call (and the pump)."""
        raise NotImplementedError

    async def _send_frame(self, frame: bytes) -> None:
        raise NotImplementedError

    def say(self, audio: bytes) -> asyncio.Future[float]:
        started: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._said.append((self._sent + len(self._queue), started))
        self._queue += audio
        return started

    async def pump(self) -> None:
        silence, size, loop = self.codec.silence, self.codec.frame_bytes, asyncio.get_running_loop()
        start, tick = loop.time(), 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * FRAME_S - loop.time()))
            frame = bytes(self._queue[:size])
            del self._queue[:size]
            spoken_from = time.monotonic() - FRAME_S  # this frame's first sample
            for offset, started in self._said:
                if not started.done() and frame and self._sent >= offset:
                    started.set_result(spoken_from)
            self._sent += len(frame)
            await self._send_frame(frame + silence[len(frame) :])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class WsLine(Line):
    """A Realtime WebSocket session through the official ``openai`` SDK: the caller's audio as
    ``input_audio_buffer.append`` events (20 ms each, in ``codec``: ``pcm24`` or ``pcmu``); the
    reply's ``response.output_audio.delta`` (pcm16 at 24 kHz) stamped per 20 ms; the session's
    transcripts of the caller kept in :attr:`transcripts`."""

    def __init__(self, url: str, codec: str) -> None:
        super().__init__(Codec(codec))
        self._url = url
        self._out = Codec("pcm24")
        self._stack = contextlib.AsyncExitStack()
        self._conn: Any = None
        self.transcripts: list[str] = []
        self.transcribed = asyncio.Event()

    async def open(self) -> None:
        self._conn = await self._stack.enter_async_context(connect(self._url, None))
        session = {"type": "realtime", "audio": {"input": {"format": PCM_FORMATS[self.codec.name]}}}
        await self._conn.session.update(session=session)
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self.pump())]

    async def _send_frame(self, frame: bytes) -> None:
        await self._conn.input_audio_buffer.append(audio=base64.b64encode(frame).decode())

    async def _listen(self) -> None:
        async for event in self._conn:
            now = time.monotonic()
            if event.type == "response.output_audio.delta":
                audio, size = base64.b64decode(event.delta), self._out.frame_bytes
                self.heard.frames += [(now, self._out.voiced(audio[i : i + size])) for i in range(0, len(audio), size)]
            elif event.type == "conversation.item.input_audio_transcription.completed":
                self.transcripts.append(event.transcript)
                self.transcribed.set()
            elif event.type == "error":
                raise RuntimeError(f"session error: {event.error.message}")

    async def close(self) -> None:
        await super().close()
        await self._stack.aclose()


class TwilioLine(Line):
    """Twilio's side of a media stream to ``ws://127.0.0.1:PORT/v1/telephony/twilio/media``."""

    def __init__(self, port: int) -> None:
        super().__init__(Codec("pcmu"))
        self._url = f"ws://127.0.0.1:{port}/v1/telephony/twilio/media"
        self._sid = "MZ" + secrets.token_hex(16)
        self._ws: websockets.ClientConnection | None = None
        self._played_until = 0.0  # when the audio in Twilio's buffer will have played (monotonic)
        self._marks: list[tuple[float, dict[str, Any]]] = []  # (when it is played, the mark) not yet echoed

    async def open(self) -> None:
        self._ws = await websockets.connect(self._url, max_size=1 << 22)
        start = {
            "streamSid": self._sid,
            "callSid": "CA" + secrets.token_hex(16),
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await self._ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self._ws.send(
            json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": self._sid, "start": start})
        )
        self._tasks = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self.pump()),
            asyncio.create_task(self._echo_marks()),
        ]

    async def _send_frame(self, frame: bytes) -> None:
        assert self._ws is not None
        payload = base64.b64encode(frame).decode()
        await self._ws.send(json.dumps({"event": "media", "streamSid": self._sid, "media": {"payload": payload}}))

    async def _listen(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            data, now = json.loads(message), time.monotonic()
            if data["event"] == "media":
                audio = base64.b64decode(data["media"]["payload"])
                self.heard.frames += [
                    (now, self.codec.voiced(audio[i : i + FRAME_BYTES])) for i in range(0, len(audio), FRAME_BYTES)
                ]
                self._played_until = max(now, self._played_until) + len(audio) / 8000  # μ-law: a byte a sample
            elif data["event"] == "mark":  # echoed once the audio before it has played, as Twilio does
                self._marks.append((max(now, self._played_until), data["mark"]))
            elif data["event"] == "clear":  # the buffer is emptied; Twilio echoes the marks it dropped
                self.heard.clears.append(now)
                self._played_until = now
                self._marks = [(now, mark) for _, mark in self._marks]

    async def _echo_marks(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            due = [mark for at, mark in self._marks if at <= now]
            self._marks = [(at, mark) for at, mark in self._marks if at > now]
            for mark in due:
                assert self._ws is not None
                await self._ws.send(json.dumps({"event": "mark", "streamSid": self._sid, "mark": mark}))

    async def close(self) -> None:
        await super().close()
        if self._ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._ws.send(json.dumps({"event": "stop", "streamSid": self._sid, "stop": {}}))
            await self._ws.close()


class SipLine(Line):
    """A SIP caller of our own: INVITE offering only ``codec`` (and telephone-event), ACK, RTP."""

    def __init__(self, sip_port: int, codec: str) -> None:
        super().__init__(Codec(codec))
        self._server = ("127.0.0.1", sip_port)
        self._sip = self._udp()
        self._rtp = self._udp()
        self._remote: tuple[str, int] | None = None
        self._call_id = secrets.token_hex(8) + "@127.0.0.1"
        self._to = ""
        self._sequence, self._ssrc = 0, secrets.randbits(32)
        self.negotiated = ""
        self.rtp: list[tuple[int, int, bool, int]] = []  # the agent's packets: (sequence, timestamp, marker, bytes)

    @staticmethod
    def _udp() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock

    def _request(self, method: str, cseq: int, body: str = "", to: str = "<sip:agent@127.0.0.1>") -> bytes:
        port = self._sip.getsockname()[1]
        headers = [
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            "From: <sip:bench@127.0.0.1>;tag=bench1",
            f"To: {to}",
            f"Call-ID: {self._call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:bench@127.0.0.1:{port}>",
        ]
        if body:
            headers.append("Content-Type: application/sdp")
        head = f"{method} sip:agent@127.0.0.1:{self._server[1]} SIP/2.0\r\n" + "\r\n".join(headers)
        return f"{head}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()

    async def _final(self, timeout_s: float) -> str:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while True:
                text = (await loop.sock_recv(self._sip, 65536)).decode("utf-8", "replace")
                status = int(text.split(" ", 2)[1]) if text.startswith("SIP/2.0 ") else 0
                if status >= 200:
                    if status != 200:
                        raise RuntimeError(f"the SIP endpoint answered: {text.splitlines()[0]}")
                    return text

    async def open(self) -> None:
        pt, rtp_port = self.codec.payload_type, self._rtp.getsockname()[1]
        sdp = (
            "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {'G722' if pt == 9 else 'PCMU'}/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
        )
        self._sip.sendto(self._request("INVITE", 1, sdp), self._server)
        ok = await self._final(30.0)
        head, _, body = ok.partition("\r\n\r\n")
        self._to = next(line[3:].strip() for line in head.split("\r\n") if line.lower().startswith("to:"))
        self._remote = ("127.0.0.1", int(re.findall(r"m=audio (\d+)", body)[0]))
        self.negotiated = re.findall(r"a=rtpmap:\d+ (\S+)", body)[0]
        self._sip.sendto(self._request("ACK", 1, to=self._to), self._server)
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self.pump())]

    def rtp_steps(self) -> tuple[list[int], list[int]]:
        """The timestamp steps between consecutive packets of a talkspurt, and the payload sizes."""
        steps = {
            (b[1] - a[1]) & 0xFFFFFFFF
            for a, b in zip(self.rtp, self.rtp[1:], strict=False)
            if (b[0] - a[0]) & 0xFFFF == 1 and not b[2]
        }
        return sorted(steps), sorted({size for *_, size in self.rtp})

    async def _send_frame(self, frame: bytes) -> None:
        assert self._remote is not None
        packet = RtpPacket(self.codec.payload_type, self._sequence, self._sequence * 160, self._ssrc, frame)
        self._rtp.sendto(packet.to_bytes(), self._remote)
        self._sequence = (self._sequence + 1) & 0xFFFF

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            packet = parse_rtp(await loop.sock_recv(self._rtp, 2048))
            if packet.payload_type == self.codec.payload_type:
                self.rtp.append((packet.sequence, packet.timestamp, packet.marker, len(packet.payload)))
                self.heard.frames.append((time.monotonic(), self.codec.voiced(packet.payload)))

    async def close(self) -> None:
        await super().close()
        try:
            if self._to:
                self._sip.sendto(self._request("BYE", 2, to=self._to), self._server)
                with contextlib.suppress(TimeoutError, RuntimeError):
                    await self._final(5.0)
        finally:
            self._sip.close()
            self._rtp.close()
