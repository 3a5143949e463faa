"""Audio containers in and out (PyAV), on real speech re-encoded at test time."""

from __future__ import annotations

import io
import itertools
import struct

import numpy as np
import pytest
import soundfile as sf

from cosyagent.audio.containers import (
    AudioCodecError,
    AudioDecodeError,
    AudioTooLongError,
    available_speech_formats,
    decode_audio,
    encode_wav,
    new_encoder,
)
from cosyagent.engines.base import TranscriptSegment
from cosyagent.web.transcriptions import split_at_pauses, to_srt, to_vtt
from tests.audio_formats import CONTAINERS, encode_as, probe
from tests.support import read_clip

CLIP = "en_philosophy_22s.wav"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_clip(CLIP, 16_000)


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_decodes_any_container_rate_and_channel_count_to_mono(speech: np.ndarray, name: str) -> None:
    container = CONTAINERS[name]
    decoded = decode_audio(encode_as(speech, 16_000, container), sample_rate=16_000)
    assert decoded.sample_rate == 16_000 and decoded.samples.ndim == 1
    assert decoded.samples.dtype == np.float32
    assert decoded.source_rate == container.rate and decoded.source_channels == container.channels
    assert abs(decoded.duration_s - 22.2) < 0.1
    # the same speech: correlates with the original once aligned (codecs add up to ~100 ms of delay)
    a = speech[16_000 : 16_000 * 6]
    b = decoded.samples[16_000 : 16_000 * 6 + 2000]
    corr = max(float(np.dot(a, b[s : s + a.size])) for s in range(2000)) / float(np.dot(a, a))
    assert corr > 0.8, corr


def test_keeps_the_source_rate_when_none_is_asked_up_to_48k(speech: np.ndarray) -> None:
    assert decode_audio(encode_as(speech, 16_000, CONTAINERS["flac"])).sample_rate == 22_050
    wav96 = io.BytesIO()
    sf.write(wav96, np.zeros(96_000, dtype=np.float32), 96_000, format="WAV")
    assert decode_audio(wav96.getvalue()).sample_rate == 48_000


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is plain text and not audio at all" * 20,
        b"\x89PNG\r\n\x1a\n" + bytes(300),
        b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",  # a playlist must not be followed
        b"ffconcat version 1.0\nfile /etc/passwd\n",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # a truncated header
    ],
    ids=["empty", "text", "png", "hls-playlist", "concat-list", "truncated-wav"],
)
def test_refuses_what_is_not_audio(data: bytes) -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(data, sample_rate=16_000)


def test_stops_decoding_past_the_duration_limit(speech: np.ndarray) -> None:
    data = encode_as(speech, 16_000, CONTAINERS["ogg_opus"])
    with pytest.raises(AudioTooLongError, match="10 s"):
        decode_audio(data, sample_rate=16_000, max_seconds=10)
    assert decode_audio(data, sample_rate=16_000, max_seconds=23).duration_s > 22


EXPECTED = {  # format -> (FFmpeg container, codec) of what the encoder writes
    "mp3": ("mp3", "mp3float"),
    "opus": ("ogg", "opus"),
    "aac": ("aac", "aac"),
    "flac": ("flac", "flac"),
    "wav": ("wav", "pcm_s16le"),
}


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_streaming_encoders_give_bytes_per_chunk_and_a_valid_file(fmt: str) -> None:
    assert fmt in available_speech_formats()
    rate = 24_000
    tone = (0.3 * np.sin(2 * np.pi * 330 * np.arange(rate * 3) / rate)).astype(np.float32)
    with new_encoder(fmt, rate) as encoder:
        pieces = [encoder.encode(chunk) for chunk in np.split(tone, 3)]
        pieces.append(encoder.finish())
    assert pieces[0], "the first chunk must give bytes at once (a streaming client starts on them)"
    assert all(pieces[1:3]), "every chunk gives bytes as it is encoded"
    data = b"".join(pieces)
    if fmt == "pcm":
        assert len(data) == tone.size * 2
        return
    container, codec, _, seconds = probe(data)
    assert (container, codec) == EXPECTED[fmt]
    assert abs(seconds - 3.0) < 0.12


def test_streamed_wav_has_unknown_length_sizes_that_readers_accept() -> None:
    tone = np.full(24_000, 0.1, dtype=np.float32)
    with new_encoder("wav", 24_000) as encoder:
        data = encoder.encode(tone) + encoder.finish()
    riff, riff_size, wave, data_size = struct.unpack("<4sI4s28xI", data[:44])
    assert (riff, wave, riff_size, data_size) == (b"RIFF", b"WAVE", 0xFFFFFFFF, 0xFFFFFFFF)
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 24_000 and audio.size == 24_000
    whole = encode_wav(tone, 24_000)
    assert struct.unpack("<I", whole[40:44])[0] == 48_000 and sf.info(io.BytesIO(whole)).frames == 24_000


def test_unknown_formats_are_refused() -> None:
    with pytest.raises(AudioCodecError, match="unsupported audio format"):
        new_encoder("ogg", 24_000)


def test_long_audio_is_cut_in_pauses_into_whisper_windows() -> None:
    rate = 16_000
    rng = np.random.default_rng(1)
    words = []
    for _ in range(30):  # 1.6 s of "speech", 0.4 s of silence, 60 s in all
        words += [rng.normal(0, 0.3, int(1.6 * rate)), np.zeros(int(0.4 * rate))]
    audio = np.concatenate(words).astype(np.float32)
    spans = split_at_pauses(audio, rate)
    assert spans[0][0] == 0 and spans[-1][1] == audio.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all((end - start) / rate <= 28.0 for start, end in spans)
    for _, cut in spans[:-1]:
        assert cut % int(2.0 * rate) >= int(1.6 * rate), "cut inside a word"
    assert split_at_pauses(audio[: 20 * rate], rate) == [(0, 20 * rate)]


def test_subtitles() -> None:
    segments = [
        TranscriptSegment(0.0, 2.5, " Hello there."),
        TranscriptSegment(2.5, 3661.25, " A long one."),
        TranscriptSegment(3661.25, 3662.0, "  "),
    ]
    assert to_srt(segments) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:02,500 --> 01:01:01,250\nA long one.\n"
    )
    assert to_vtt(segments) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n00:00:02.500 --> 01:01:01.250\nA long one.\n"
    )


@pytest.mark.parametrize("fmt", ["opus", "mp3", "aac", "flac"])
def test_piper_s_rate_is_encoded_in_every_container(fmt: str) -> None:
    """22.05 kHz (Piper, the default voice): Opus takes only 8-48 kHz steps, so it is resampled to 24 kHz."""
    tone = (0.3 * np.sin(np.arange(22_050) * 2 * np.pi * 440 / 22_050)).astype(np.float32)
    encoder = new_encoder(fmt, 22_050)
    data = encoder.encode(tone) + encoder.finish()
    decoded = decode_audio(data, sample_rate=16_000).samples
    assert abs(decoded.size / 16_000 - 1.0) < 0.1
    assert float(np.sqrt(np.mean(decoded**2))) > 0.1


def test_raw_pcm_is_24_khz_whatever_the_engine_s_rate() -> None:
    """pcm has no header: a 22.05 kHz second (Piper) comes out as 24000 samples; a WAV keeps 22.05 kHz."""
    second = (0.3 * np.sin(np.arange(22_050) * 2 * np.pi * 440 / 22_050)).astype(np.float32)
    pcm = new_encoder("pcm", 22_050)
    raw = pcm.encode(second[:10_000]) + pcm.encode(second[10_000:]) + pcm.finish()
    assert abs(len(raw) // 2 - 24_000) <= 2
    wav = new_encoder("wav", 22_050)
    audio, rate = sf.read(io.BytesIO(wav.encode(second) + wav.finish()), dtype="float32")
    assert rate == 22_050 and audio.size == 22_050
