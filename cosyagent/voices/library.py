"""The voice library: built-in engine voices plus user voices (clips and blends), and their features.

User voices live in a :class:`~cosyagent.voices.store.VoiceStore` and survive restarts.
The speaker features the active TTS engine derives from a voice are computed once, kept in
memory, cached on disk, and loaded at startup (:meth:`VoiceLibrary.open`), so speaking
with a user voice never pays for feature extraction. A clip voice under an engine that
cannot clone (Kokoro) is stored with its text for an engine that can, and reported as not
usable yet. Framework-free and blocking: the web layer calls the slow parts off the loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cosyagent.audio.containers import encode_wav
from cosyagent.engines.base import AudioF32, EngineError
from cosyagent.voices.features import CloningUnsupportedError, SpeakerFeatureEngine, SpeakerFeatures
from cosyagent.voices.store import (
    InvalidVoiceIdError as _StoreIdError,
)
from cosyagent.voices.store import (
    VoiceRecord,
    VoiceStore,
    VoiceStoreError,
    new_voice_id,
    validate_voice_id,
)

logger = logging.getLogger(__name__)

MAX_NAME_CHARS = 64
MAX_TEXT_CHARS = 2000
MAX_BLEND_VOICES = 8


class VoiceLibraryError(Exception):
    """A voice request that cannot be served; ``code`` and ``param`` say which and where."""

    code = "invalid_voice"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidVoiceError(VoiceLibraryError):
    code = "invalid_value"


class InvalidVoiceIdError(VoiceLibraryError):
    code = "invalid_voice_id"


class VoiceNotFoundError(VoiceLibraryError):
    code = "voice_not_found"


class VoiceIdNotFoundError(VoiceNotFoundError):
    """No voice behind an id in a path (``/v1/voices/{voice_id}``): a missing resource, not a bad value."""


class ClipDurationError(InvalidVoiceError):
    code = "invalid_clip_duration"


class VoiceNameTakenError(VoiceLibraryError):
    code = "voice_name_taken"


class BuiltinVoiceError(VoiceLibraryError):
    code = "builtin_voice"


class VoiceNotUsableError(VoiceLibraryError):
    code = "voice_not_usable"


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    name: str
    kind: Literal["builtin", "clip", "blend"]
    usable: bool
    record: VoiceRecord | None = None
    note: str | None = None  # why a voice cannot be spoken yet


@dataclass(frozen=True)
class ClipLimits:
    min_seconds: float = 1.0
    max_seconds: float = 30.0


class VoiceLibrary:
    """Thread-safe. Call :meth:`open` once the TTS engine is loaded."""

    def __init__(
        self,
        root: Path,
        engine: SpeakerFeatureEngine,
        limits: ClipLimits | None = None,
        *,
        aliases: Mapping[str, str] | None = None,
        default_voice: str | None = None,
    ) -> None:
        self.store = VoiceStore(root)
        # Other names for voices (OpenAI's "alloy"...): an alias whose target this engine lacks
        # speaks the default voice; a built-in or user voice of the same name wins over it.
        self._aliases = dict(aliases or {})
        self._default_voice = default_voice
        self.engine = engine
        self.limits = limits or ClipLimits()
        self.features_computed = 0  # how many times features were derived (not read from a cache)
        self._records: dict[str, VoiceRecord] = {}
        self._features: dict[str, SpeakerFeatures] = {}
        self._not_usable: dict[str, str] = {}
        self._lock = threading.RLock()

    def open(self) -> list[str]:
        """Clean up interrupted writes, load every stored voice and warm its features; return the warmed ids."""
        started = time.perf_counter()
        self.store.recover()
        warmed: list[str] = []
        for record in self.store.load_all():
            with self._lock:
                self._records[record.id] = record
            if self._warm(record):
                warmed.append(record.id)
        stored_only = [f"{r.name} ({r.id})" for r in self._records.values() if r.id not in warmed]
        logger.info(
            "voice library %s: %d user voice(s) in %.2f s; warmed for %s: %s; stored only: %s",
            self.store.root,
            len(self._records),
            time.perf_counter() - started,
            self.engine.feature_key,
            [f"{self._records[i].name} ({i})" for i in warmed] or "none",
            stored_only or "none",
        )
        return warmed

    # --- queries --------------------------------------------------------------------------

    def list(self) -> list[VoiceInfo]:
        builtins = [VoiceInfo(v, v, "builtin", True) for v in self.engine.builtin_voices()]
        with self._lock:
            records = sorted(self._records.values(), key=lambda r: (r.created_at, r.id))
            return builtins + [self._info(r) for r in records]

    def get(self, voice_id: str) -> VoiceInfo:
        """A voice by id (a built-in voice's id is its name)."""
        self._check_id(voice_id)
        if voice_id in self.engine.builtin_voices():
            return VoiceInfo(voice_id, voice_id, "builtin", True)
        with self._lock:
            record = self._records.get(voice_id)
            if record is None:
                raise VoiceIdNotFoundError(f"no voice with id {voice_id!r}", "voice_id")
            return self._info(record)

    def find(self, voice: str) -> VoiceInfo | None:
        """A voice by built-in name, user voice id, user voice name, or alias."""
        info = self._find_own(voice)
        if info is not None or voice not in self._aliases:
            return info
        target = self._find_own(self._aliases[voice])
        if target is None and self._default_voice is not None:
            target = self._find_own(self._default_voice)
        return target

    def _find_own(self, voice: str) -> VoiceInfo | None:
        if voice in self.engine.builtin_voices():
            return VoiceInfo(voice, voice, "builtin", True)
        with self._lock:
            record = self._records.get(voice) or next((r for r in self._records.values() if r.name == voice), None)
            return None if record is None else self._info(record)

    def exists(self, voice: str) -> bool:
        return self.find(voice) is not None

    def resolve(self, voice: str, param: str = "voice") -> str:
        """The name to pass to the engine's ``synthesize(voice=...)``, or why there is none."""
        info = self.find(voice)
        if info is None:
            known = ", ".join(v.id for v in self.list() if v.usable)
            raise VoiceNotFoundError(f"unknown voice {voice!r}; available voices: {known}", param)
        if not info.usable:
            raise VoiceNotUsableError(f"voice {voice!r} cannot be spoken: {info.note}", param)
        return info.id

    def clip_wav(self, voice_id: str) -> bytes:
        info = self.get(voice_id)
        if info.kind != "clip":
            raise VoiceIdNotFoundError(f"voice {voice_id!r} is a {info.kind} voice: it has no stored clip", "voice_id")
        try:
            return self.store.clip_path(voice_id).read_bytes()
        except FileNotFoundError as exc:
            raise VoiceIdNotFoundError(f"voice {voice_id!r} was deleted", "voice_id") from exc

    # --- changes --------------------------------------------------------------------------

    def create_blend(self, name: str, weights: Mapping[str, float]) -> VoiceInfo:
        name = self.check_name(name)
        weights = _check_weights(weights, self.engine.builtin_voices())
        try:
            features = self.engine.blend_features(weights)
        except EngineError as exc:
            raise InvalidVoiceError(str(exc), "blend") from exc
        self.features_computed += 1
        record = VoiceRecord(new_voice_id(), name, "blend", int(time.time()), blend=weights)
        return self._add(record, None, features)

    def create_clip(
        self, name: str, audio: AudioF32, sample_rate: int, text: str, text_source: Literal["given", "asr"]
    ) -> VoiceInfo:
        """Store a reference clip (mono float32) and what it says; derive features if the engine can clone."""
        name = self.check_name(name)
        duration = audio.size / sample_rate
        self.check_clip_duration(duration)
        text = " ".join(text.split())
        if not text:
            raise InvalidVoiceError("the clip's text is empty (no speech was recognized in it: send text)", "text")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidVoiceError(f"the clip's text is longer than {MAX_TEXT_CHARS} characters", "text")
        wav = encode_wav(audio, sample_rate)
        record = VoiceRecord(
            new_voice_id(),
            name,
            "clip",
            int(time.time()),
            text=text,
            text_source=text_source,
            sample_rate=sample_rate,
            duration_s=round(duration, 3),
            clip_sha256=hashlib.sha256(wav).hexdigest(),
        )
        features = self._clip_features(record, audio, sample_rate)
        return self._add(record, wav, features)

    def check_clip_duration(self, seconds: float) -> None:
        if not self.limits.min_seconds <= seconds <= self.limits.max_seconds:
            raise ClipDurationError(
                f"a voice clip must last {self.limits.min_seconds:g}-{self.limits.max_seconds:g} s; "
                f"this one lasts {seconds:.1f} s",
                "file",
            )

    def delete(self, voice_id: str) -> None:
        self._check_id(voice_id)
        if voice_id in self.engine.builtin_voices():
            raise BuiltinVoiceError(f"{voice_id!r} is a built-in voice of the engine: it cannot be deleted", "voice_id")
        with self._lock:
            if voice_id not in self._records:
                raise VoiceIdNotFoundError(f"no voice with id {voice_id!r}", "voice_id")
            self.store.delete(voice_id)
            self._records.pop(voice_id)
            self._features.pop(voice_id, None)
            self._not_usable.pop(voice_id, None)
            self.engine.unregister(voice_id)

    # --- internals ------------------------------------------------------------------------

    def _add(self, record: VoiceRecord, wav: bytes | None, features: SpeakerFeatures | None) -> VoiceInfo:
        with self._lock:
            self.check_name(record.name)  # again: another request may have taken it meanwhile
            self.store.create(record, wav)
            self._records[record.id] = record
            if features is not None:
                self._cache(record, features, write=True)
            return self._info(record)

    def _warm(self, record: VoiceRecord) -> bool:
        """Make a stored voice speakable: memory cache, else disk cache, else derive (and cache)."""
        key = self.engine.feature_key
        features = self._features.get(record.id) or self.store.read_features(record.id, key, record.source)
        write = features is None
        if features is None:
            try:
                features = self._derive(record)
            except (EngineError, OSError) as exc:
                logger.error("cannot derive features of voice %s: %s", record.id, exc)
                self._not_usable[record.id] = f"deriving its speaker features failed: {exc}"
                return False
        if features is None:
            return False
        try:
            self._cache(record, features, write=write)
        except EngineError as exc:
            logger.error("voice %s: the engine refused its cached features: %s", record.id, exc)
            self._not_usable[record.id] = str(exc)
            return False
        return True

    def _derive(self, record: VoiceRecord) -> SpeakerFeatures | None:
        if record.kind == "blend":
            self.features_computed += 1
            return self.engine.blend_features(record.blend)
        if not self.engine.can_clone:
            self._not_usable[record.id] = self._cannot_clone_note()
            return None
        from cosyagent.audio.containers import decode_audio

        clip = decode_audio(self.store.clip_path(record.id).read_bytes())
        return self._clip_features(record, clip.samples, clip.sample_rate)

    def _clip_features(self, record: VoiceRecord, audio: AudioF32, sample_rate: int) -> SpeakerFeatures | None:
        if not self.engine.can_clone:
            self._not_usable[record.id] = self._cannot_clone_note()
            return None
        assert record.text is not None  # VoiceRecord checks it for clip voices
        try:
            features = self.engine.clip_features(audio, sample_rate, record.text)
        except CloningUnsupportedError:
            self._not_usable[record.id] = self._cannot_clone_note()
            return None
        except EngineError as exc:
            raise InvalidVoiceError(f"the engine cannot derive a voice from this clip: {exc}", "file") from exc
        self.features_computed += 1
        return features

    def _cache(self, record: VoiceRecord, features: SpeakerFeatures, write: bool) -> None:
        self.engine.register(record.id, features)
        with self._lock:
            self._features[record.id] = features
            self._not_usable.pop(record.id, None)
        if write:
            try:
                self.store.write_features(record.id, self.engine.feature_key, record.source, features)
            except (OSError, VoiceStoreError) as exc:  # the voice still works; the next start derives them again
                logger.warning("cannot cache features of voice %s: %s", record.id, exc)

    def _info(self, record: VoiceRecord) -> VoiceInfo:
        note = self._not_usable.get(record.id)
        usable = record.id in self._features
        if not usable and note is None:
            note = "its speaker features are not ready"
        return VoiceInfo(record.id, record.name, record.kind, usable, record, None if usable else note)

    def _cannot_clone_note(self) -> str:
        return (
            f"the active TTS engine ({self.engine.feature_key}) cannot clone voices; the clip and its text "
            "are stored for an engine that can (CosyVoice)"
        )

    def _check_id(self, voice_id: str) -> None:
        try:
            validate_voice_id(voice_id)
        except _StoreIdError as exc:
            raise InvalidVoiceIdError(str(exc), "voice_id") from exc

    def check_name(self, name: str) -> str:
        """The name, trimmed, if a new voice may take it."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidVoiceError("a voice needs a name", "name")
        name = name.strip()
        if len(name) > MAX_NAME_CHARS or any(unicodedata.category(c).startswith("C") for c in name):
            raise InvalidVoiceError(f"a voice name has 1-{MAX_NAME_CHARS} printable characters", "name")
        if self._find_own(name) is not None:  # an alias may be taken: the voice then wins over it
            raise VoiceNameTakenError(f"there is already a voice called {name!r}", "name")
        return name


def _check_weights(weights: Mapping[str, float], builtin: Sequence[str]) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        example = json.dumps(dict(zip(builtin[:2] or ("voice_a", "voice_b"), (0.7, 0.3), strict=False)))
        raise InvalidVoiceError(f"a blend maps built-in voices to weights, e.g. {example}", "blend")
    if len(weights) > MAX_BLEND_VOICES:
        raise InvalidVoiceError(f"a blend mixes at most {MAX_BLEND_VOICES} voices", "blend")
    known = set(builtin)
    clean: dict[str, float] = {}
    for voice, weight in weights.items():
        if voice not in known:
            raise InvalidVoiceError(f"{voice!r} is not a built-in voice; blend from: {sorted(known)}", "blend")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise InvalidVoiceError(f"the weight of {voice!r} must be a number >= 0", "blend")
        clean[voice] = float(weight)
    if sum(clean.values()) <= 0:
        raise InvalidVoiceError("blend weights must have a positive sum", "blend")
    return clean
