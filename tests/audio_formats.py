"""Test audio in other containers, made at test time with PyAV from the real clips in tests/data."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from cosyagent.engines.base import AudioF32


@dataclass(frozen=True)
class Container:
    muxer: str
    codec: str
    rate: int
    channels: int
    suffix: str
    mime: str


# What browsers, phones and recorders produce: any rate, mono or stereo.
CONTAINERS = {
    "mp3": Container("mp3", "libmp3lame", 44100, 1, "mp3", "audio/mpeg"),
    "ogg_opus": Container("ogg", "libopus", 48000, 1, "ogg", "audio/ogg"),
    "flac": Container("flac", "flac", 22050, 1, "flac", "audio/flac"),
    "webm_opus_stereo": Container("webm", "libopus", 48000, 2, "webm", "audio/webm"),
    "m4a_aac_stereo": Container("ipod", "aac", 44100, 2, "m4a", "audio/mp4"),
    "wav_stereo_44k": Container("wav", "pcm_s16le", 44100, 2, "wav", "audio/wav"),
}


def encode_as(audio: AudioF32, rate: int, container: Container) -> bytes:
    """``audio`` (mono float32 at ``rate``) re-encoded; stereo copies the channel."""
    out = io.BytesIO()
    layout = "stereo" if container.channels == 2 else "mono"
    with av.open(out, mode="w", format=container.muxer) as muxer:
        stream = muxer.add_stream(container.codec, rate=container.rate, layout=layout)
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=container.rate)
        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = rate
        for resampled in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(resampled):
                muxer.mux(packet)
    return out.getvalue()


def probe(data: bytes) -> tuple[str, str, int, float]:
    """(container format, codec, sample rate, seconds) of an audio file, as FFmpeg reads it."""
    with av.open(io.BytesIO(data)) as media:
        stream = media.streams.audio[0]
        samples = sum(frame.samples for frame in media.decode(stream))
        rate = int(stream.codec_context.sample_rate)
        return media.format.name, stream.codec_context.name, rate, samples / rate
