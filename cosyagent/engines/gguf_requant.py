"""The embedded LLM's weights re-quantized once for the CPU kernels that read them fastest.

Why: Qwen2.5-Coder-0.5B's hidden size (896) is not a multiple of 256, so its packaged Q4_K_M file
holds most weight matrices as Q5_0 (132 of 168). llama.cpp has no repacked x86 kernel for Q5_0,
while IQ4_NL (the same 32-value blocks, a non-linear 4-bit grid) is repacked at load into 8-row
interleaved blocks for its AVX2/AVX-512 GEMM. On the 2-core Xeon (llama-bench, 2 threads,
interleaved runs) a 20-token prompt went from 107-125 to 161-188 tokens/s and decoding from 27-28
to 30-34 tokens/s; the everyday questions were answered as well (greedy 13 of 16 against 14,
sampled at 0.3: 15, 13, 12, 14 against 13, 14, 13, 13). docs/benchmarks.md has the runs.

What: every Q5_0 matrix becomes IQ4_NL; every other tensor (the Q8_0 output, the Q5_0 token
embedding, which is only looked up, the Q4_K/Q6_K/Q8_0 matrices, the norms) is copied bit for bit.
llama.cpp's own ``llama-quantize`` does it (``make install`` builds it beside ``llama-server``),
once, into ``$COSYAGENT_CACHE_DIR`` under a name holding the source's digest: ~40 s on 2 cores.
A stamp beside the file (its digest, size and modification time, as :mod:`gguf_parts` keeps them)
makes later starts a ``stat``;
a file that no longer matches its stamp is made again. Without ``llama-quantize`` the packaged
file is used, with a warning.
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.gguf_parts import cache_dir, hash_file, stamp_matches, write_stamp
from cosyagent.engines.llama_server import find_binary
from cosyagent.engines.partial_files import partial_files

logger = logging.getLogger(__name__)

QUANTIZE_BINARY = "llama-quantize"
RECIPE = "iq4nl1"  # bump when the conversion changes: the cached file's name holds it
QUANTIZE_TIMEOUT_S = 900.0

# ggml type ids (ggml.h) and the names llama-quantize takes, for the types a GGUF of ours may hold.
GGML_TYPE_NAMES = {
    0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0", 9: "q8_1",
    10: "q2_k", 11: "q3_k", 12: "q4_k", 13: "q5_k", 14: "q6_k", 15: "q8_k", 20: "iq4_nl", 30: "bf16",
}  # fmt: skip
Q5_0, IQ4_NL = 6, 20
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def find_llama_quantize() -> Path | None:
    """``llama-quantize`` beside this Python (``make install`` puts it in ``.venv/bin``), else on PATH."""
    return find_binary(QUANTIZE_BINARY)


def tensor_types(path: Path) -> dict[str, int]:
    """Each tensor's ggml type id, from a GGUF file's header (the weights are not read)."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ValueError("not a GGUF file")
            _unpack(f, "I")  # version
            tensor_count, kv_count = _unpack(f, "Q"), _unpack(f, "Q")
            for _ in range(kv_count):
                _read_string(f)
                _skip_value(f, _unpack(f, "I"))
            types: dict[str, int] = {}
            for _ in range(tensor_count):
                name = _read_string(f)
                for _ in range(_unpack(f, "I")):
                    _unpack(f, "Q")  # dimensions
                types[name] = _unpack(f, "I")
                _unpack(f, "Q")  # offset
            return types
    except (OSError, ValueError, struct.error, KeyError) as exc:
        raise EngineUnavailableError(f"cannot read the GGUF header of {path}: {exc}") from exc


def _unpack(f: BinaryIO, fmt: str) -> int:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("the header ends early")
    value: int = struct.unpack("<" + fmt, data)[0]
    return value


def _read_string(f: BinaryIO) -> str:
    length = _unpack(f, "Q")
    data = f.read(length)
    if len(data) != length:
        raise ValueError("the header ends early")
    return data.decode("utf-8", errors="replace")


def _skip_value(f: BinaryIO, kind: int) -> None:
    if kind == _STRING:
        f.seek(_unpack(f, "Q"), os.SEEK_CUR)
    elif kind == _ARRAY:
        item_kind, count = _unpack(f, "I"), _unpack(f, "Q")
        if item_kind in _SCALARS:
            f.seek(count * struct.calcsize("<" + _SCALARS[item_kind]), os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_value(f, item_kind)
    else:
        f.seek(struct.calcsize("<" + _SCALARS[kind]), os.SEEK_CUR)  # KeyError: an unknown type


def quantize_arguments(types: dict[str, int]) -> tuple[list[str], list[str]]:
    """llama-quantize's flags and its ``--tensor-type-file`` lines: the layers' Q5_0 matrices to
    IQ4_NL, every other matrix, the token embedding and the output to the type they have."""
    try:
        flags = [
            "--token-embedding-type", GGML_TYPE_NAMES[types["token_embd.weight"]],
            "--output-tensor-type", GGML_TYPE_NAMES[types.get("output.weight", types["token_embd.weight"])],
        ]  # fmt: skip
        lines = []
        for name, kind in types.items():
            if name.startswith("blk.") and name.endswith(".weight") and GGML_TYPE_NAMES[kind] != "f32":
                target = IQ4_NL if kind == Q5_0 else kind
                lines.append(f"{name.replace('.', chr(92) + '.')}={GGML_TYPE_NAMES[target]}")  # a regex: dots escaped
    except KeyError as exc:
        raise EngineUnavailableError(f"cannot plan the conversion: tensor or type {exc} is not known") from exc
    return flags, lines


def iq4_nl_weights(
    source: Path, source_sha256: str, *, threads: int = 2, tool: Path | None = None, directory: Path | None = None
) -> Path:
    """``source`` (verified, digest ``source_sha256``) with its Q5_0 matrices as IQ4_NL, made once
    into ``directory`` (default the model cache); ``source`` itself when ``llama-quantize`` is not
    installed or fails (a warning says why)."""
    directory = directory or cache_dir()
    target = directory / f"{source.stem}.{RECIPE}-{source_sha256[:16]}.gguf"
    if stamp_matches(target):
        return target
    tool = tool or find_llama_quantize()
    if tool is None:
        logger.warning(
            "%s not found (make install builds it beside llama-server): the LLM runs on the packaged weights, "
            "~1.5x slower to read a prompt on x86",
            QUANTIZE_BINARY,
        )
        return source
    started = time.perf_counter()
    logger.info("re-quantizing %s for this CPU's kernels (once, ~40 s on 2 cores)", source.name)
    try:
        flags, lines = quantize_arguments(tensor_types(source))
        _run_quantize(tool, source, target, flags, lines, threads)
        write_stamp(target, hash_file(target))
    except (EngineUnavailableError, OSError) as exc:
        logger.warning("cannot re-quantize %s (%s): the LLM runs on the packaged weights", source.name, exc)
        return source
    logger.info("re-quantized into %s in %.0f s", target, time.perf_counter() - started)
    return target


def _run_quantize(tool: Path, source: Path, target: Path, flags: list[str], lines: list[str], threads: int) -> None:
    with partial_files(target, ".types", ".partial") as (types_file, partial):
        types_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        command = [str(tool), "--allow-requantize", *flags, "--tensor-type-file", str(types_file)]
        command += [str(source), str(partial), "IQ4_NL", str(max(1, threads))]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=QUANTIZE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EngineUnavailableError(f"{QUANTIZE_BINARY} took over {QUANTIZE_TIMEOUT_S:.0f} s") from exc
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise EngineUnavailableError(f"{QUANTIZE_BINARY} exited with {done.returncode}: {tail}")
        made = sum(kind == IQ4_NL for kind in tensor_types(partial).values())
        if made != sum(line.endswith("=iq4_nl") for line in lines):
            raise EngineUnavailableError(f"{QUANTIZE_BINARY} did not convert every Q5_0 matrix")
        os.chmod(partial, 0o644)
        os.replace(partial, target)
