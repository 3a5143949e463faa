"""Moonshine base-en's weights from the ``moonshine-cpp`` package, checked and made loadable.

``moonshine-cpp`` 0.1.4 ships the encoder and the merged (KV-cache) decoder as ``.ort`` files
(ONNX Runtime's flatbuffer format, int8 weights) and the tokenizer as ``tokenizer.bin``. Its own
native library needs AVX-512 (an illegal instruction on AVX2 machines), so only the weight files
are used and the package is never imported.

Why convert: onnxruntime treats an ``.ort`` file as already optimized and applies no graph
optimization to it, so every decoder step casts and rescales all int8 weights again (~75 ms per
token on 2 cores). :func:`onnx_models` writes each file back out as a plain ONNX graph
(onnxruntime loads the ``.ort`` with optimizations off and saves the graph it holds; the ``onnx``
package names the ``If`` branches, which the ONNX checker requires and the flatbuffer lacks).
Loaded as ONNX, constant folding dequantizes the weights once per session: ~9 ms per token.

Why quantize the decoder again: after that folding every decoder step multiplies by float32
weights, reading ~160 MB per token, so a short question's decode was memory-bound. The decoder
is therefore folded once more offline and its MatMul nodes quantized dynamically to int8
(:func:`quantize_decoder`): on the 2-core Xeon, a 2-4 s utterance took 168 -> 122 ms (encoder
included) and agreed with the float decoder word for word on 24 utterances. The weights are
unsigned (U8U8): onnxruntime's AVX2 kernels for signed weights can saturate on CPUs without
VNNI, which its documentation warns of.

The conversion runs once, offline, into ``$COSYAGENT_CACHE_DIR/moonshine`` (default
``~/.cache/cosyagent``), under names holding the source digest and the onnxruntime version;
it is deterministic (the same inputs give the same bytes). Every load checks the package's
files against the sha256 digests below first: a missing or altered file stops the engine with
a message naming the package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.partial_files import partial_files

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

PACKAGE = "moonshine-cpp"
_VERSION = "0.1.4"
_WHERE = f" (pip install {PACKAGE}=={_VERSION}; its only wheel is for Linux x86_64)"
_MODULE = "moonshine_cpp"
_MODEL_DIR = "models/base-en"
CACHE_ENV = "COSYAGENT_CACHE_DIR"  # the same convention as engines.gguf_parts and engines.onnx_outputs
DEFAULT_CACHE_DIR = "~/.cache/cosyagent"
_SUBDIR = "moonshine"

# The files of moonshine-cpp 0.1.4 (models/base-en/).
SHA256 = {
    "encoder_model.ort": "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
    "decoder_model_merged.ort": "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
    "tokenizer.bin": "04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9",
}


@dataclass(frozen=True)
class MoonshineFiles:
    encoder: Path
    """Plain ONNX: ``input_values`` [1, samples] at 16 kHz -> ``last_hidden_state``."""
    decoder: Path
    """Plain ONNX, merged (``use_cache_branch`` selects the first step or a cached one), its
    MatMul nodes quantized dynamically to uint8."""
    tokenizer: Path


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser() / _SUBDIR


def package_dir() -> Path:
    """The installed package's model folder, found without importing it (the import loads the AVX-512 library)."""
    try:
        spec = importlib.util.find_spec(_MODULE)
    except (ImportError, ValueError) as exc:
        raise EngineUnavailableError(f"Moonshine model not found: {PACKAGE} is not installed ({exc}){_WHERE}") from exc
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise EngineUnavailableError(f"Moonshine model not found: {PACKAGE} is not installed{_WHERE}")
    return Path(locations[0]) / _MODEL_DIR


def checked_sources(directory: Path | None = None) -> dict[str, Path]:
    """The package's three files, each verified by sha256; :class:`EngineUnavailableError` naming the package."""
    folder = directory or package_dir()
    sources: dict[str, Path] = {}
    for name, expected in SHA256.items():
        path = folder / name
        try:
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except FileNotFoundError as exc:
            raise EngineUnavailableError(f"Moonshine model file {path} is missing; reinstall {PACKAGE}") from exc
        except OSError as exc:
            raise EngineUnavailableError(f"cannot read {path}: {exc}; reinstall {PACKAGE}") from exc
        if digest != expected:
            raise EngineUnavailableError(
                f"Moonshine model file {path} fails its checksum (sha256 {digest}, expected {expected}); "
                f"reinstall {PACKAGE}=={_VERSION}"
            )
        sources[name] = path
    return sources


def onnx_models(source_dir: Path | None = None, cache: Path | None = None) -> MoonshineFiles:
    """Verify the package's files, convert the two ``.ort`` graphs to ONNX once, return the paths."""
    sources = checked_sources(source_dir)
    folder = cache or cache_dir()
    decoder = _converted(sources["decoder_model_merged.ort"], SHA256["decoder_model_merged.ort"], folder)
    return MoonshineFiles(
        encoder=_converted(sources["encoder_model.ort"], SHA256["encoder_model.ort"], folder),
        decoder=_cached(decoder.with_suffix(".u8.onnx"), decoder, quantize_decoder),
        tokenizer=sources["tokenizer.bin"],
    )


def _converted(source: Path, digest: str, folder: Path) -> Path:
    import onnxruntime as ort

    target = folder / f"{source.stem}.{digest[:16]}.ort{ort.__version__}.onnx"
    return _cached(target, source, convert_ort_to_onnx)


def _cached(target: Path, source: Path, make: Callable[[Path, Path], None]) -> Path:
    """``target``, made from ``source`` by ``make`` unless it is there already."""
    if target.is_file():
        return target
    started = time.perf_counter()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        make(source, target)
    except OSError as exc:
        raise EngineUnavailableError(f"cannot write the converted Moonshine model {target}: {exc}") from exc
    logger.info("converted %s in %.1f s: %s", source.name, time.perf_counter() - started, target)
    return target


def convert_ort_to_onnx(source: Path, target: Path) -> None:
    """Write the graph of the ORT-format ``source`` as a plain ONNX file ``target`` (atomically).

    Nothing is optimized on the way: the nodes and the int8 weights are the file's own.
    """
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    with partial_files(target, ".partial", ".partial") as (raw, final):
        options.optimized_model_filepath = str(raw)
        try:
            ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
            model = onnx.load(raw)
        except Exception as exc:  # onnxruntime and protobuf raise their own error types
            raise EngineUnavailableError(f"cannot convert {source} to ONNX: {exc}; reinstall {PACKAGE}") from exc
        _name_graphs(model.graph, "main")
        onnx.save(model, final)
        os.chmod(final, 0o644)  # a cache file like any other, not a secret
        os.replace(final, target)


def quantize_decoder(source: Path, target: Path) -> None:
    """Write ``source`` (a converted decoder) to ``target`` (atomically) with its int8 weights
    folded to float32 and every ``MatMul`` quantized dynamically, uint8 weights per tensor."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # standard ops only
    options.intra_op_num_threads = 1
    with partial_files(target, ".partial", ".partial") as (folded, final):
        options.optimized_model_filepath = str(folded)
        try:
            ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
            quantize_dynamic(
                folded,
                final,
                per_channel=False,
                weight_type=QuantType.QUInt8,
                op_types_to_quantize=["MatMul"],
                extra_options={"EnableSubgraph": True},  # the merged decoder's layers are inside its If
            )
        except Exception as exc:  # onnxruntime and protobuf raise their own error types
            raise EngineUnavailableError(f"cannot quantize {source}: {exc}; delete it to convert it again") from exc
        os.chmod(final, 0o644)
        os.replace(final, target)


def _name_graphs(graph: onnx.GraphProto, path: str) -> None:
    """Give every unnamed graph (the ``If`` branches) a name from its place in the model."""
    import onnx

    if not graph.name:
        graph.name = path
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _name_graphs(attribute.g, f"{path}/{node.name}/{attribute.name}")
            for index, subgraph in enumerate(attribute.graphs):
                _name_graphs(subgraph, f"{path}/{node.name}/{attribute.name}{index}")


class Tokenizer:
    """``tokenizer.bin``: each token's bytes, length-prefixed, the token id being its position.

    A length below 128 is one byte; from 128 it is two (``second * 128 + first - 128``). Text
    is the tokens' bytes joined, ``▁`` read as a space; tokens spelled ``<...>`` are control
    tokens and left out (the same rules as moonshine.cpp's ``BinTokenizer``).
    """

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EngineUnavailableError(f"cannot read {path}: {exc}; reinstall {PACKAGE}") from exc
        pieces: list[bytes] = []
        offset = 0
        while offset < len(data):
            length = data[offset]
            offset += 1
            if length >= 128:
                if offset >= len(data):
                    raise EngineUnavailableError(f"{path} is truncated; reinstall {PACKAGE}")
                length = data[offset] * 128 + length - 128
                offset += 1
            if offset + length > len(data):
                raise EngineUnavailableError(f"{path} is truncated; reinstall {PACKAGE}")
            pieces.append(data[offset : offset + length])
            offset += length
        return cls(pieces)

    def decode(self, tokens: list[int]) -> str:
        out = bytearray()
        for token in tokens:
            piece = self.pieces[token] if 0 <= token < len(self.pieces) else b""
            if len(piece) > 2 and piece.startswith(b"<") and piece.endswith(b">"):
                continue
            out += piece
        return out.decode("utf-8", errors="replace").replace("▁", " ").strip()
