"""Installing and loading kokoro-js's English voices: checksums, npm failures, idempotence."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.kokoro_voices import (
    SPEC,
    STYLE_SHAPE,
    TARBALL_NAME,
    VOICE_SHA256,
    VoicesMissingError,
    install,
    load_voices,
    voices_dir,
)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kokoro-js-1.2.1.tgz from npm's own cache (``make install`` put it there): no network."""
    folder = tmp_path_factory.mktemp("pack")
    result = subprocess.run(
        ["npm", "pack", SPEC, "--offline", "--pack-destination", str(folder), "--loglevel=error"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"{SPEC} is not in npm's cache (installed with --tarball?): {result.stderr.strip()[:200]}")
    return folder / TARBALL_NAME


def test_the_installed_voices_load_and_are_kokoro_styles() -> None:
    styles = load_voices()
    assert sorted(styles) == sorted(VOICE_SHA256)
    assert all(style.shape == STYLE_SHAPE and style.dtype == np.float32 for style in styles.values())
    assert all(name[0] in "ab" for name in styles)
    assert np.isfinite(styles["af_heart"]).all()


def test_a_tampered_voice_is_refused_naming_kokoro_js(tmp_path: Path) -> None:
    copy = tmp_path / "voices"
    shutil.copytree(voices_dir(), copy)
    (copy / "am_michael.bin").write_bytes(b"\0" * (copy / "am_michael.bin").stat().st_size)
    with pytest.raises(EngineUnavailableError, match=r"am_michael\.bin fails its checksum .*kokoro-js@1\.2\.1"):
        load_voices(copy)


def test_missing_voices_are_reported_as_missing(tmp_path: Path) -> None:
    with pytest.raises(VoicesMissingError, match=r"not installed .*not found"):
        load_voices(tmp_path)
    shutil.copytree(voices_dir(), tmp_path / "some")
    (tmp_path / "some" / "bf_lily.bin").unlink()
    with pytest.raises(VoicesMissingError, match="1 of 28 missing"):
        load_voices(tmp_path / "some")


def test_install_from_the_tarball_is_idempotent_and_repairs(tmp_path: Path, tarball: Path) -> None:
    target = tmp_path / "kokoro-js-1.2.1"
    assert install(target, tarball=tarball) == target
    assert (target / ".installed.json").is_file()
    styles = load_voices(target)
    assert all(np.array_equal(styles[n], s) for n, s in load_voices().items())
    heart = target / "af_heart.bin"
    before = heart.stat().st_mtime_ns
    install(target, tarball=tmp_path / "not-read")  # intact: the tarball is not even opened
    assert heart.stat().st_mtime_ns == before
    heart.write_bytes(b"tampered")
    install(target, tarball=tarball)
    assert load_voices(target)["af_heart"].shape == STYLE_SHAPE


def test_a_tarball_that_is_not_kokoro_js_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / TARBALL_NAME
    fake.write_bytes(b"\x1f\x8b not the package")
    with pytest.raises(EngineUnavailableError, match=r"is not the npm package kokoro-js@1\.2\.1: sha256 "):
        install(tmp_path / "out", tarball=fake)
    assert not (tmp_path / "out").exists()


def test_no_npm_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError, match=r"npm not found.*apt-get install npm"):
        install(tmp_path / "out", npm=str(tmp_path / "no-npm"))


def test_an_unreachable_registry_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """npm with an empty cache and a registry on a closed 127.0.0.1 port: what an offline machine sees."""
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(EngineUnavailableError, match=r"npm pack kokoro-js@1\.2\.1` failed .*ECONNREFUSED.*--tarball"):
        install(tmp_path / "out")
