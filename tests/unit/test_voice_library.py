"""The voice library on a real temp directory, with a scripted feature engine (no models).

The engine implements the real :class:`SpeakerFeatureEngine` protocol and counts how
often it derives features, so the tests can tell a cache hit from a recomputation.
Crashes are real: a child process dies (``os._exit``) in the middle of a write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cosyagent.engines.base import AudioF32, CancelToken, EngineError, EngineInfo
from cosyagent.voices.features import CloningUnsupportedError, SpeakerFeatureEngine, SpeakerFeatures
from cosyagent.voices.library import (
    BuiltinVoiceError,
    ClipDurationError,
    ClipLimits,
    InvalidVoiceError,
    InvalidVoiceIdError,
    VoiceLibrary,
    VoiceNameTakenError,
    VoiceNotFoundError,
    VoiceNotUsableError,
)
from cosyagent.voices.store import InvalidVoiceIdError as StoreIdError
from cosyagent.voices.store import VoiceStore, validate_voice_id
from cosyagent.voices.synthesizer import LibrarySynthesizer

RATE = 16_000
ROOT = Path(__file__).resolve().parents[2]


class ScriptedEngine:
    """Two built-in voices; a voice's features are a vector; cloning optional."""

    feature_key = "scripted-v1"

    def __init__(self, can_clone: bool) -> None:
        self.can_clone = can_clone
        self.builtin = {"alpha": np.ones(4, dtype=np.float32), "kumo": np.full(4, 3.0, dtype=np.float32)}
        self.registered: dict[str, np.ndarray[Any, Any]] = {}
        self.derived = 0

    def builtin_voices(self) -> list[str]:
        return sorted(self.builtin)

    def blend_features(self, weights: Mapping[str, float]) -> SpeakerFeatures:
        self.derived += 1
        total = sum(weights.values())
        return {"vector": sum(self.builtin[v] * (w / total) for v, w in weights.items())}  # type: ignore[dict-item]

    def clip_features(self, audio: AudioF32, sample_rate: int, text: str) -> SpeakerFeatures:
        if not self.can_clone:
            raise CloningUnsupportedError("no speaker encoder")
        self.derived += 1
        return {"vector": np.array([audio.size / sample_rate, len(text), 0, 0], dtype=np.float32)}

    def register(self, voice: str, features: SpeakerFeatures) -> None:
        if "vector" not in features:
            raise EngineError("foreign features")
        self.registered[voice] = np.asarray(features["vector"])

    def unregister(self, voice: str) -> None:
        self.registered.pop(voice, None)


def clip(seconds: float = 2.0) -> AudioF32:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def library(root: Path, can_clone: bool = False) -> tuple[VoiceLibrary, ScriptedEngine]:
    engine = ScriptedEngine(can_clone)
    lib = VoiceLibrary(root / "voices", engine, ClipLimits(1.0, 30.0))
    lib.open()
    return lib, engine


def test_scripted_engine_is_a_feature_engine() -> None:
    assert isinstance(ScriptedEngine(False), SpeakerFeatureEngine)


@pytest.mark.parametrize("bad", ["", ".", "..", "a.b", "a/b", "a\\b", "../etc", "x" * 65, "voice 1", "é", "a\x00"])
def test_ids_with_separators_dots_or_odd_characters_are_refused(tmp_path: Path, bad: str) -> None:
    lib, _ = library(tmp_path)
    with pytest.raises(InvalidVoiceIdError):
        lib.get(bad)
    with pytest.raises(InvalidVoiceIdError):
        lib.delete(bad)
    with pytest.raises(StoreIdError):
        validate_voice_id(bad)


def test_a_blend_is_usable_at_once_and_after_a_restart_without_recomputing(tmp_path: Path) -> None:
    lib, engine = library(tmp_path)
    info = lib.create_blend("Warm", {"alpha": 0.75, "kumo": 0.25})
    assert info.usable and info.kind == "blend" and info.id.startswith("voice_")
    assert engine.derived == 1
    np.testing.assert_allclose(engine.registered[info.id], np.full(4, 1.5))
    assert lib.resolve("Warm") == lib.resolve(info.id) == info.id
    assert lib.exists("Warm") and lib.exists(info.id) and lib.exists("alpha")

    again, engine2 = library(tmp_path)  # a restart: the features come from the disk cache
    assert engine2.derived == 0 and again.features_computed == 0
    np.testing.assert_allclose(engine2.registered[info.id], np.full(4, 1.5))
    assert [v.id for v in again.list()] == ["alpha", "kumo", info.id]
    assert again.get(info.id).record == info.record


@pytest.mark.parametrize("blend", [[{"voice": "alpha", "weight": 1}], {}, "alpha"])
def test_a_blend_of_the_wrong_shape_is_shown_one_with_the_engines_voices(tmp_path: Path, blend: object) -> None:
    lib, _ = library(tmp_path)
    with pytest.raises(InvalidVoiceError) as caught:
        lib.create_blend("Warm", blend)  # type: ignore[arg-type]
    assert caught.value.param == "blend"
    assert str(caught.value).endswith('e.g. {"alpha": 0.7, "kumo": 0.3}')


def test_clip_features_are_derived_once_cached_and_preloaded(tmp_path: Path) -> None:
    lib, engine = library(tmp_path, can_clone=True)
    info = lib.create_clip("Me", clip(2.5), RATE, "  hello   there ", "given")
    assert info.usable and engine.derived == 1
    assert info.record is not None and info.record.text == "hello there" and info.record.duration_s == 2.5
    assert lib.resolve(info.id) == info.id
    assert lib.clip_wav(info.id).startswith(b"RIFF")
    features_file = tmp_path / "voices" / info.id / "features" / "scripted-v1.npz"
    assert features_file.is_file()

    _, engine2 = library(tmp_path, can_clone=True)
    assert engine2.derived == 0 and info.id in engine2.registered

    features_file.write_bytes(b"not a zip")  # a damaged cache is derived again (and rewritten)
    third, engine3 = library(tmp_path, can_clone=True)
    assert engine3.derived == 1 and third.get(info.id).usable
    _, engine4 = library(tmp_path, can_clone=True)
    assert engine4.derived == 0


def test_an_engine_that_cannot_clone_stores_the_clip_and_says_so(tmp_path: Path) -> None:
    lib, engine = library(tmp_path, can_clone=False)
    info = lib.create_clip("Me", clip(), RATE, "hello there", "asr")
    assert not info.usable and info.note is not None and "cannot clone" in info.note
    assert engine.registered == {}
    assert (tmp_path / "voices" / info.id / "audio.wav").is_file()
    with pytest.raises(VoiceNotUsableError, match="cannot clone"):
        lib.resolve("Me")
    assert lib.exists(info.id)  # a session may still name it

    cloning, engine2 = library(tmp_path, can_clone=True)  # a cloning engine derives its features at startup
    assert cloning.get(info.id).usable and engine2.derived == 1


def test_features_of_another_engine_or_source_are_not_reused(tmp_path: Path) -> None:
    lib, _ = library(tmp_path)
    info = lib.create_blend("Warm", {"alpha": 1.0})
    store = VoiceStore(tmp_path / "voices")
    assert store.read_features(info.id, "scripted-v1", "blend:[]") is None  # another source
    assert store.read_features(info.id, "other-engine", info.record.source) is None  # type: ignore[union-attr]
    assert store.read_features(info.id, "scripted-v1", info.record.source) is not None  # type: ignore[union-attr]


def test_delete_removes_everything_and_forgets_the_voice(tmp_path: Path) -> None:
    lib, engine = library(tmp_path)
    info = lib.create_blend("Warm", {"alpha": 1.0})
    lib.delete(info.id)
    assert info.id not in engine.registered and not lib.exists("Warm")
    assert list((tmp_path / "voices").iterdir()) == []
    with pytest.raises(VoiceNotFoundError):
        lib.delete(info.id)
    with pytest.raises(BuiltinVoiceError):
        lib.delete("alpha")
    assert library(tmp_path)[0].list()[-1].id == "kumo"


@pytest.mark.parametrize(
    ("name", "error"),
    [("", InvalidVoiceError), ("  ", InvalidVoiceError), ("a\nb", InvalidVoiceError), ("x" * 65, InvalidVoiceError),
     ("alpha", VoiceNameTakenError), ("Warm", VoiceNameTakenError), (" Warm ", VoiceNameTakenError)],
)  # fmt: skip
def test_names_must_be_printable_and_unique(tmp_path: Path, name: str, error: type[Exception]) -> None:
    lib, _ = library(tmp_path)
    lib.create_blend("Warm", {"alpha": 1.0})
    with pytest.raises(error):
        lib.create_blend(name, {"kumo": 1.0})
    assert lib.create_blend("温かい声 2", {"kumo": 1.0}).name == "温かい声 2"


@pytest.mark.parametrize(
    "weights",
    [{}, {"nobody": 1.0}, {"alpha": -1.0}, {"alpha": 0.0}, {"alpha": float("nan")}, {"alpha": "1"}, {"alpha": True}],
)
def test_bad_blends_are_refused_and_nothing_is_written(tmp_path: Path, weights: dict[str, Any]) -> None:
    lib, _ = library(tmp_path)
    with pytest.raises(InvalidVoiceError) as caught:
        lib.create_blend("Mix", weights)
    assert caught.value.param == "blend"
    assert not (tmp_path / "voices").exists() or list((tmp_path / "voices").iterdir()) == []


@pytest.mark.parametrize("seconds", [0.5, 30.5])
def test_clips_under_1_s_or_over_30_s_are_refused(tmp_path: Path, seconds: float) -> None:
    lib, _ = library(tmp_path)
    with pytest.raises(ClipDurationError):
        lib.create_clip("Me", clip(seconds), RATE, "hello", "given")
    with pytest.raises(InvalidVoiceError, match="text"):
        lib.create_clip("Me", clip(2.0), RATE, "   ", "given")
    assert not (tmp_path / "voices").exists() or list((tmp_path / "voices").iterdir()) == []


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib, engine = library(tmp_path, can_clone=True)
    real_fsync = os.fsync
    calls = 0

    def failing_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # after meta.json, while the clip is being written
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        lib.create_clip("Me", clip(), RATE, "hello", "given")
    assert list((tmp_path / "voices").iterdir()) == []
    assert not lib.exists("Me") and engine.registered == {}


CRASH_SCRIPT = """
import os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.unit.test_voice_library import library, clip
import cosyagent.voices.store as store

point = sys.argv[1]
lib, _ = library(Path(sys.argv[2]), can_clone=True)
if point == "delete":
    real_rename = os.rename
    def crash_after_rename(src, dst):
        real_rename(src, dst)
        os._exit(3)  # renamed to .trash, never removed
    voice = lib.list()[-1].id
    store.os.rename = crash_after_rename
    lib.delete(voice)
real_write = store._write_synced
def crash_mid_write(path, data):
    if point == "clip" and path.name == "audio.wav":
        path.write_bytes(data[: len(data) // 2])
        os._exit(3)  # half a clip on disk, never renamed into place
    real_write(path, data)
store._write_synced = crash_mid_write
if point == "features":
    real_replace = os.replace
    def crash_before_replace(src, dst):
        os._exit(3)  # the temp feature file is written, never renamed
    store.os.replace = crash_before_replace
lib.create_clip("Crash", clip(), 16000, "hello", "given")
"""


@pytest.mark.parametrize("point", ["clip", "features", "delete"])
def test_a_crash_mid_write_leaves_no_half_written_voice(tmp_path: Path, point: str) -> None:
    if point == "delete":
        lib, _ = library(tmp_path, can_clone=True)
        lib.create_clip("Doomed", clip(), RATE, "bye", "given")
    script = textwrap.dedent(CRASH_SCRIPT.format(root=str(ROOT)))
    result = subprocess.run([sys.executable, "-c", script, point, str(tmp_path)], capture_output=True, timeout=60)
    assert result.returncode == 3, result.stderr.decode()
    leftovers = [p.name for p in (tmp_path / "voices").rglob("*") if p.name.startswith((".tmp-", ".trash-"))]
    assert leftovers, "the crash should have left a temp file or directory"

    lib, engine = library(tmp_path, can_clone=True)  # the next start cleans up
    assert not [p for p in (tmp_path / "voices").rglob("*") if p.name.startswith((".tmp-", ".trash-"))]
    names = [v.name for v in lib.list() if v.kind != "builtin"]
    if point == "clip":
        assert names == []
    elif point == "features":  # the voice was complete; its features are derived again
        assert names == ["Crash"] and lib.list()[-1].usable and engine.derived == 1
    else:
        assert names == []
    for meta in (tmp_path / "voices").glob("*/meta.json"):
        json.loads(meta.read_text())  # every voice left is whole


async def test_the_library_synthesizer_speaks_names_and_ids_and_explains_refusals(tmp_path: Path) -> None:
    lib, _ = library(tmp_path)
    blend = lib.create_blend("Warm", {"alpha": 1.0})
    lib.create_clip("Cloned", clip(), RATE, "hello", "given")
    heard: list[str] = []

    class Engine:
        name = "scripted"
        sample_rate = 24_000

        def load(self) -> None: ...
        def voices(self) -> list[str]:
            return []

        async def synthesize(self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None):  # type: ignore[no-untyped-def]
            heard.append(voice)
            yield np.zeros(10, dtype=np.float32)

        def close(self) -> None: ...

    speech = LibrarySynthesizer(Engine(), lib)
    for voice in ("Warm", blend.id, "alpha"):
        assert [c.size async for c in speech.synthesize("hi", voice=voice)] == [10]
    assert heard == [blend.id, blend.id, "alpha"]
    assert set(speech.voices()) == {"alpha", "kumo", blend.id}
    with pytest.raises(EngineError, match="cannot clone"):
        [c async for c in speech.synthesize("hi", voice="Cloned")]
    with pytest.raises(EngineError, match="unknown voice"):
        [c async for c in speech.synthesize("hi", voice="nobody")]


@pytest.mark.parametrize("follows", [True, False])
async def test_instructions_reach_an_engine_that_follows_them_on_every_path(tmp_path: Path, follows: bool) -> None:
    lib, _ = library(tmp_path)
    calls: list[tuple[str, dict[str, Any]]] = []

    class Engine:
        name = "styled"
        sample_rate = 24_000
        info = EngineInfo("styled", "styled-1", 24_000, times_words=True, follows_instructions=follows)

        async def synthesize(self, text: str, **kw: Any) -> AsyncIterator[AudioF32]:
            calls.append(("synthesize", kw))
            yield np.zeros(10, dtype=np.float32)

        async def synthesize_timed(self, text: str, **kw: Any) -> AsyncIterator[AudioF32]:
            calls.append(("synthesize_timed", kw))
            yield np.zeros(10, dtype=np.float32)

        async def synthesize_stream(self, text: AsyncIterator[str], **kw: Any) -> AsyncIterator[AudioF32]:
            calls.append(("synthesize_stream", kw))
            yield np.zeros(10, dtype=np.float32)

    async def words() -> AsyncIterator[str]:
        yield "hi"

    plain = LibrarySynthesizer(Engine(), lib)  # type: ignore[arg-type]
    styled = plain.with_instructions("  Speak cheerfully.  ")
    for speech in (styled, plain, plain.with_instructions("   ")):
        [c async for c in speech.synthesize("hi", voice="alpha")]
        [c async for c in speech.synthesize_timed("hi", voice="alpha")]
        [c async for c in speech.synthesize_stream(words(), voice="alpha")]
    instructed = [kw.get("instruct") for _, kw in calls]
    assert [name for name, _ in calls[:3]] == ["synthesize", "synthesize_timed", "synthesize_stream"]
    assert instructed == (["Speak cheerfully."] * 3 if follows else [None] * 3) + [None] * 6


def test_aliases_name_voices_and_fall_back_to_the_default_voice(tmp_path: Path) -> None:
    engine = ScriptedEngine(False)
    aliases = {"alloy": "alpha", "verse": "kumo", "cedar": "not-in-this-engine", "nova": "alpha"}
    lib = VoiceLibrary(tmp_path / "voices", engine, aliases=aliases, default_voice="kumo")
    lib.open()
    assert lib.resolve("alloy") == "alpha" and lib.resolve("verse") == "kumo"
    assert lib.resolve("cedar") == "kumo"  # its target is not a voice here: the default voice speaks
    lib.create_blend("nova", {"kumo": 1.0})  # a user voice of the same name wins over the alias
    assert lib.resolve("nova") != "alpha" and lib.exists("nova")
    with pytest.raises(VoiceNotFoundError):
        lib.resolve("nobody")  # not an alias, not a voice
