"""Expose an inner tensor of a shipped ONNX graph as an extra output, patched once into the cache.

The TTS graphs compute per-phoneme durations on the way to the audio but return only the audio.
:func:`exposed` copies the graph with one more output (an ``Identity`` of the chosen tensor,
under a fixed name), writes it to ``$COSYAGENT_CACHE_DIR`` (default ``~/.cache/cosyagent``) under a
name holding the source's sha256, so a changed source is patched again, and returns its path.
Nothing else of the graph changes: the same nodes compute the same audio. The ``onnx`` package
is needed only the first time (it is imported lazily); later loads hash the source and reuse the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.partial_files import partial_files

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

CACHE_ENV = "COSYAGENT_CACHE_DIR"  # the same convention as engines.gguf_parts
DEFAULT_CACHE_DIR = "~/.cache/cosyagent"
_SUBDIR = "onnx-outputs"

TensorFinder = Callable[["onnx.ModelProto"], str]
"""Returns the name of the tensor to expose; raises ``ValueError`` when the graph has none that fits."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser() / _SUBDIR


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def exposed(source: Path, find: TensorFinder, output_name: str, *, directory: Path | None = None) -> Path:
    """The path of ``source`` with ``find(model)``'s tensor added as the output ``output_name``.

    Made once per source digest; a crash while writing never leaves a half-written file under
    the real name. :class:`EngineUnavailableError` when the source cannot be read, the ``onnx``
    package is missing or ``find`` finds no tensor.
    """
    try:
        digest = file_sha256(source)
    except OSError as exc:
        raise EngineUnavailableError(f"cannot read {source}: {exc}") from exc
    folder = directory or cache_dir()
    target = folder / f"{source.stem}.{output_name}.{digest[:16]}.onnx"
    if target.is_file():
        return target
    try:
        import onnx
    except ImportError as exc:
        raise EngineUnavailableError("the onnx package is needed to expose the model's durations") from exc
    try:
        model = onnx.load(str(source))
        tensor = find(model)
    except Exception as exc:  # a corrupt file or no such tensor: protobuf, OS and value errors alike
        raise EngineUnavailableError(f"cannot expose a duration tensor in {source}: {exc}") from exc
    if any(output.name == output_name for output in model.graph.output):
        raise EngineUnavailableError(f"{source} already has an output named {output_name!r}")
    model.graph.node.append(onnx.helper.make_node("Identity", [tensor], [output_name], name=f"expose_{output_name}"))
    model.graph.output.append(onnx.ValueInfoProto(name=output_name))
    with partial_files(target, ".partial") as (temporary,):
        onnx.save(model, temporary)
        os.chmod(temporary, 0o644)  # a cache file like any other, not a secret
        os.replace(temporary, target)
    logger.info("exposed %s of %s as output %r in %s", tensor, source.name, output_name, target)
    return target


def single_op_output(op_type: str) -> TensorFinder:
    """A finder for the output of the graph's only node of ``op_type`` (Piper's ``Ceil``: w_ceil)."""

    def find(model: onnx.ModelProto) -> str:
        outputs = [node.output[0] for node in model.graph.node if node.op_type == op_type]
        if len(outputs) != 1:
            raise ValueError(f"expected exactly one {op_type} node, found {len(outputs)}")
        return str(outputs[0])

    return find
