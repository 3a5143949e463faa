"""User voices on disk: one directory per voice, created and removed atomically.

Layout under the store's root (``<data_dir>/voices``)::

    <id>/meta.json                 what the voice is (name, kind, text or blend weights)
    <id>/audio.wav                 the reference clip (clip voices), 16-bit mono
    <id>/features/<key>.npz        speaker features an engine derived (a cache)

A voice is built in a hidden ``.tmp-*`` directory, every file fsynced, and renamed into
place in one step, so after a crash at any point a voice either exists whole or not at
all. Deletion renames the directory to ``.trash-*`` first. :meth:`VoiceStore.recover`
removes whatever such leftovers a crash left behind. Feature files are replaced the
same way (temp file, fsync, ``os.replace``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

VoiceKind = Literal["clip", "blend"]
_VOICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FEATURE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_FEATURE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_META = "meta.json"
_CLIP = "audio.wav"
_FEATURES = "features"
_SOURCE = "__source__"


class VoiceStoreError(Exception):
    """The store cannot do what was asked (base class)."""


class InvalidVoiceIdError(VoiceStoreError):
    pass


def validate_voice_id(voice_id: str) -> str:
    """Ids are 1-64 of ``A-Z a-z 0-9 _ -``: never a path separator, a dot or ``..``."""
    if not isinstance(voice_id, str) or not _VOICE_ID.fullmatch(voice_id):
        raise InvalidVoiceIdError(f"invalid voice id {voice_id!r}: use 1-64 letters, digits, '_' or '-'")
    return voice_id


def new_voice_id() -> str:
    return f"voice_{secrets.token_hex(8)}"


@dataclass(frozen=True)
class VoiceRecord:
    """What a user voice is. Immutable once stored."""

    id: str
    name: str
    kind: VoiceKind
    created_at: int
    text: str | None = None  # what the clip says (clip voices)
    text_source: Literal["given", "asr"] | None = None
    blend: Mapping[str, float] = field(default_factory=dict)  # blend voices
    sample_rate: int | None = None  # of the stored clip
    duration_s: float | None = None
    clip_sha256: str | None = None

    def __post_init__(self) -> None:
        validate_voice_id(self.id)
        if self.kind not in ("clip", "blend"):
            raise ValueError(f"unknown voice kind {self.kind!r}")
        if self.kind == "clip" and (self.text is None or self.sample_rate is None):
            raise ValueError("a clip voice needs its text and sample rate")
        if self.kind == "blend" and not self.blend:
            raise ValueError("a blend voice needs its weights")

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["blend"] = dict(self.blend)
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VoiceRecord:
        return cls(
            id=str(raw["id"]),
            name=str(raw["name"]),
            kind=raw["kind"],
            created_at=int(raw["created_at"]),
            text=raw.get("text"),
            text_source=raw.get("text_source"),
            blend={str(k): float(v) for k, v in (raw.get("blend") or {}).items()},
            sample_rate=raw.get("sample_rate"),
            duration_s=raw.get("duration_s"),
            clip_sha256=raw.get("clip_sha256"),
        )

    @property
    def source(self) -> str:
        """Identifies what speaker features are derived from: a cache made from anything else is stale."""
        if self.kind == "blend":
            return "blend:" + json.dumps(sorted(self.blend.items()))
        return f"clip:{self.clip_sha256}:{self.text}"


class VoiceStore:
    """The files of user voices. Thread-safe for distinct voices; blocking (call it off the loop)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- reading ------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Remove what an interrupted create or delete left behind; return the names removed."""
        if not self.root.is_dir():
            return []
        removed = []
        for entry in self.root.iterdir():
            if entry.name.startswith((".tmp-", ".trash-")):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name)
            elif entry.is_dir():
                features = entry / _FEATURES
                for stale in features.glob(".tmp-*") if features.is_dir() else ():
                    stale.unlink(missing_ok=True)
                    removed.append(f"{entry.name}/{_FEATURES}/{stale.name}")
        if removed:
            logger.warning("removed %d leftover(s) of interrupted writes in %s: %s", len(removed), self.root, removed)
        return removed

    def load_all(self) -> list[VoiceRecord]:
        """Every stored voice, oldest first; unreadable ones are logged and skipped."""
        if not self.root.is_dir():
            return []
        records = []
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                record = VoiceRecord.from_json(json.loads((entry / _META).read_text(encoding="utf-8")))
                if record.id != entry.name:
                    raise ValueError(f"meta.json names id {record.id!r}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.error("skipping voice directory %s: %s", entry, exc)
                continue
            records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def clip_path(self, voice_id: str) -> Path:
        return self.root / validate_voice_id(voice_id) / _CLIP

    def read_features(self, voice_id: str, key: str, source: str) -> dict[str, npt.NDArray[Any]] | None:
        """Cached features, or None when absent, unreadable or derived from another ``source``."""
        path = self._features_path(voice_id, key)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            logger.warning("ignoring unreadable feature cache %s: %s", path, exc)
            return None
        stored_source = arrays.pop(_SOURCE, None)
        if stored_source is None or str(stored_source) != source:
            return None
        return arrays

    # --- writing ------------------------------------------------------------------------

    def create(self, record: VoiceRecord, clip_wav: bytes | None = None) -> None:
        """Write a new voice atomically: all its files appear at once, or none do."""
        target = self.root / validate_voice_id(record.id)
        self.root.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise VoiceStoreError(f"voice {record.id!r} already exists")
        staging = self.root / f".tmp-{record.id}-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            meta = json.dumps(record.to_json(), ensure_ascii=False, indent=2).encode("utf-8")
            _write_synced(staging / _META, meta)
            if clip_wav is not None:
                _write_synced(staging / _CLIP, clip_wav)
            _fsync_dir(staging)
            os.rename(staging, target)  # atomic; fails rather than replace an existing voice
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def delete(self, voice_id: str) -> bool:
        """Remove a voice; False if it was not there. Atomic: the voice is gone in one rename."""
        target = self.root / validate_voice_id(voice_id)
        trash = self.root / f".trash-{voice_id}-{secrets.token_hex(4)}"
        try:
            os.rename(target, trash)
        except FileNotFoundError:
            return False
        _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def write_features(self, voice_id: str, key: str, source: str, features: Mapping[str, npt.NDArray[Any]]) -> None:
        """Cache features atomically (temp file, fsync, ``os.replace``)."""
        path = self._features_path(voice_id, key)
        bad = [name for name in features if not _FEATURE_NAME.fullmatch(name) or name in ("file", "allow_pickle")]
        if bad:
            raise VoiceStoreError(f"invalid feature name(s) {bad}")
        if not path.parent.parent.is_dir():
            raise VoiceStoreError(f"voice {voice_id!r} does not exist")
        path.parent.mkdir(exist_ok=True)
        with _staged(path) as staging:
            with staging.open("wb") as handle:
                arrays: dict[str, Any] = {_SOURCE: np.asarray(source), **features}
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, path)
        _fsync_dir(path.parent)

    def _features_path(self, voice_id: str, key: str) -> Path:
        if not _FEATURE_KEY.fullmatch(key) or key.startswith("."):
            raise VoiceStoreError(f"invalid feature key {key!r}")
        return self.root / validate_voice_id(voice_id) / _FEATURES / f"{key}.npz"


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temp path beside ``path``, removed if the block fails before renaming it."""
    staging = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield staging
    finally:
        staging.unlink(missing_ok=True)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
