"""Audio containers in and out: decode any upload to mono float32, encode speech as it streams.

PyAV (FFmpeg) does the containers and codecs. Only audio demuxers are allowed when an
upload is opened, so a crafted file can never make FFmpeg follow a playlist or open
another file. Encoders are incremental: each :meth:`StreamEncoder.encode` returns the
bytes that are ready now, so a response can start before the speech is finished.
"""

from __future__ import annotations

import functools
import io
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cosyagent.audio.pcm import AudioF32, StreamResampler, float_to_pcm16

RAW_PCM_RATE = 24_000  # response_format pcm: OpenAI's raw 16-bit mono at 24 kHz

if TYPE_CHECKING:
    import av.container

# FFmpeg demuxer names: "matroska" also reads webm, "mov" reads mp4/m4a/3gp, "aac" is ADTS.
AUDIO_DEMUXERS = "wav,w64,mp3,ogg,flac,matroska,mov,aac,aiff,caf"


class AudioCodecError(ValueError):
    """Audio that cannot be decoded or encoded as asked."""


class AudioDecodeError(AudioCodecError):
    """The bytes are not audio we can read (not a media file, no audio stream, corrupt)."""


class AudioTooLongError(AudioDecodeError):
    def __init__(self, max_seconds: float) -> None:
        super().__init__(f"the audio is longer than the limit of {max_seconds:g} s")
        self.max_seconds = max_seconds


@dataclass(frozen=True)
class DecodedAudio:
    samples: AudioF32
    """Mono float32 at ``sample_rate``."""
    sample_rate: int
    source_rate: int
    source_channels: int
    container: str
    codec: str

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


def decode_audio(
    data: bytes, *, sample_rate: int | None = None, max_seconds: float | None = None, max_rate: int = 48_000
) -> DecodedAudio:
    """Decode the first audio stream of any supported container, downmixed to mono.

    ``sample_rate`` None keeps the source rate, or ``max_rate`` if that is lower. Decoding stops as soon as the audio
    passes ``max_seconds`` (:class:`AudioTooLongError`), so a small file that expands
    to hours of audio costs little. Blocking: call it off the event loop.
    """
    import av
    import av.error

    if not data:
        raise AudioDecodeError("the file is empty")
    try:
        with av.open(io.BytesIO(data), mode="r", options={"format_whitelist": AUDIO_DEMUXERS}) as container:
            if not container.streams.audio:
                raise AudioDecodeError("the file has no audio stream")
            stream = container.streams.audio[0]
            codec = stream.codec_context.name
            source_rate = int(stream.codec_context.sample_rate or 0)
            channels = int(stream.codec_context.channels or 0)
            target = sample_rate or min(source_rate, max_rate)
            if target <= 0:
                raise AudioDecodeError("the audio stream has no sample rate")
            limit = None if max_seconds is None else int(max_seconds * target) + 1
            resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
            pieces: list[AudioF32] = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    piece = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    pieces.append(piece)
                    total += piece.size
                if limit is not None and total > limit:
                    raise AudioTooLongError(float(max_seconds or 0))
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
            format_name = container.format.name
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise AudioDecodeError(f"not a readable audio file ({reason})") from exc
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    if limit is not None and samples.size > limit:
        raise AudioTooLongError(float(max_seconds or 0))
    if samples.size == 0:
        raise AudioDecodeError("the file contains no audio samples")
    return DecodedAudio(samples, target, source_rate or target, channels, format_name, codec)


def encode_wav(audio: AudioF32, sample_rate: int) -> bytes:
    """A complete 16-bit mono WAV file."""
    pcm = float_to_pcm16(audio)
    return _wav_header(sample_rate, len(pcm)) + pcm


def _wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """RIFF/WAVE header for 16-bit mono; unknown length (a stream) is written as 0xFFFFFFFF."""
    data_size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff_size = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", riff_size, b"WAVE",
        b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16,
        b"data", data_size,
    )  # fmt: skip


# --- streaming encoders ---------------------------------------------------------------


@dataclass(frozen=True)
class SpeechFormat:
    name: str
    media_type: str
    container: str | None = None  # FFmpeg muxer, None for the raw formats we write ourselves
    codec: str | None = None
    bit_rate: int | None = None
    options: tuple[tuple[str, str], ...] = ()


SPEECH_FORMATS: dict[str, SpeechFormat] = {
    "mp3": SpeechFormat("mp3", "audio/mpeg", "mp3", "libmp3lame", 64_000),
    # 100 ms Ogg pages: audio leaves the muxer soon after it is encoded.
    "opus": SpeechFormat("opus", "audio/ogg; codecs=opus", "ogg", "libopus", 32_000, (("page_duration", "100000"),)),
    "aac": SpeechFormat("aac", "audio/aac", "adts", "aac", 64_000),
    "flac": SpeechFormat("flac", "audio/flac", "flac", "flac"),
    "wav": SpeechFormat("wav", "audio/wav"),
    "pcm": SpeechFormat("pcm", "audio/pcm"),
}


@functools.cache
def available_speech_formats() -> tuple[str, ...]:
    """The formats of :data:`SPEECH_FORMATS` whose encoder this FFmpeg build has."""
    import av
    import av.error

    names = []
    for spec in SPEECH_FORMATS.values():
        if spec.codec is None:
            names.append(spec.name)
            continue
        try:
            av.Codec(spec.codec, "w")
        except (ValueError, av.error.FFmpegError):  # not compiled in
            continue
        if spec.container in av.formats_available:
            names.append(spec.name)
    return tuple(names)


class StreamEncoder(ABC):
    """Float32 mono chunks in, container bytes out, as soon as they are ready.

    Not thread-safe: call it from one thread at a time. Always :meth:`close` it (a
    ``with`` block does), also when the stream is abandoned.
    """

    media_type: str

    @abstractmethod
    def encode(self, audio: AudioF32) -> bytes: ...

    @abstractmethod
    def finish(self) -> bytes:
        """Flush the encoder; the bytes returned end the file."""

    def close(self) -> None:  # noqa: B027  (nothing to release by default)
        pass

    def __enter__(self) -> StreamEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PcmEncoder(StreamEncoder):
    """Raw 16-bit little-endian mono, optionally after a WAV header for a stream of unknown length.

    Without a header nothing says the rate, so raw PCM is always OpenAI's 24 kHz (Piper's 22.05 kHz
    is resampled); a WAV keeps the engine's rate and says so."""

    def __init__(self, sample_rate: int, media_type: str, header: bool) -> None:
        self.media_type = media_type
        self._header = _wav_header(sample_rate, None) if header else b""
        self._resampler = StreamResampler(sample_rate, sample_rate if header else RAW_PCM_RATE)

    def encode(self, audio: AudioF32) -> bytes:
        out, self._header = self._header + float_to_pcm16(self._resampler.process(audio)), b""
        return out

    def finish(self) -> bytes:
        out, self._header = self._header + float_to_pcm16(self._resampler.flush()), b""
        return out


class _Sink:
    """A write-only, non-seekable file for FFmpeg's muxer: we take what it wrote after each packet."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes | memoryview) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


def _codec_rate(codec: str, sample_rate: int) -> int:
    """``sample_rate`` if the encoder takes it, else the lowest rate above it that it takes (else its highest)."""
    import av

    rates = av.codec.Codec(codec, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    return min((r for r in rates if r > sample_rate), default=max(rates))


class _AvEncoder(StreamEncoder):
    def __init__(self, spec: SpeechFormat, sample_rate: int) -> None:
        import av

        assert spec.container is not None and spec.codec is not None  # only called for such formats
        self.media_type = spec.media_type
        self._sink = _Sink()
        self._container: av.container.OutputContainer | None = av.open(
            self._sink, mode="w", format=spec.container, options=dict(spec.options)
        )
        try:
            rate = _codec_rate(spec.codec, sample_rate)  # Opus takes 8/12/16/24/48 kHz, not Piper's 22.05
            self._stream = cast(Any, self._container.add_stream(spec.codec, rate=rate, layout="mono"))
            if spec.bit_rate is not None:
                self._stream.codec_context.bit_rate = spec.bit_rate
            self._resampler = av.AudioResampler(format=self._stream.codec_context.format.name, layout="mono", rate=rate)
        except Exception:
            self.close()
            raise
        self._rate = sample_rate

    def encode(self, audio: AudioF32) -> bytes:
        import av

        if audio.size == 0:
            return b""
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = self._rate
        self._mux(self._resampler.resample(frame))
        return self._sink.take()

    def finish(self) -> bytes:
        self._mux(self._resampler.resample(None))
        self._mux([None])
        self.close()
        return self._sink.take()

    def _mux(self, frames: list[Any]) -> None:
        if self._container is None:
            raise AudioCodecError("the encoder is closed")
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()  # writes the trailer, if any, into the sink


def new_encoder(format_name: str, sample_rate: int) -> StreamEncoder:
    """An encoder for one of :func:`available_speech_formats`; AudioCodecError for any other."""
    if format_name not in available_speech_formats():
        raise AudioCodecError(
            f"unsupported audio format {format_name!r}; use one of {list(available_speech_formats())}"
        )
    spec = SPEECH_FORMATS[format_name]
    if spec.codec is None:
        return _PcmEncoder(sample_rate, spec.media_type, header=format_name == "wav")
    return _AvEncoder(spec, sample_rate)
