"""Keep the engines' native heap from ratcheting up: lean onnxruntime options and ``malloc_trim``.

The speech engines are C++ runtimes (onnxruntime, CTranslate2) that allocate through the C
library's ``malloc``. Each call makes tensors whose sizes vary with the audio or the text (a
Piper clause's length, an utterance's frames), and glibc keeps what is freed in per-thread
arenas instead of giving it back: RSS then climbs for the first minutes of speech and settles
at a high-water mark far above what is in use. Measured (docs/benchmarks.md, "Churn and
soak"): Piper alone grew +95 MiB over its first 30 clauses with onnxruntime's defaults, and
stayed flat with its memory arena and memory patterns off *and* a ``malloc_trim(0)`` after
the calls; either alone left +40 to +90 MiB.

:func:`lean_onnx_options` turns off onnxruntime's own arena (so freed tensors reach malloc)
and its per-shape memory patterns (useless when every call has a new shape);
:func:`trim_native_heap` hands free pages back to the OS;
:class:`~cosyagent.engines.base.EngineExecutor` calls it on the engine's worker thread after
a job that leaves every engine idle (the process-wide scheduler has no job running or
waiting), so it never delays a caller. Without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (musl, macOS, Windows: nothing to call)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def can_trim() -> bool:
    """Whether this process's C library has ``malloc_trim`` (glibc)."""
    return _malloc_trim is not None


def trim_native_heap() -> bool:
    """``malloc_trim(0)``: give the free pages of every malloc arena back to the OS; True when it ran.

    Blocking, 1-5 ms after a second of engine work on this machine (0.1 ms when there is
    nothing to give back): call it off the event loop, after a job, never before one.
    """
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def lean_onnx_options(options: Any) -> Any:
    """Turn off onnxruntime's CPU memory arena and memory patterns on ``options`` (a ``SessionOptions``); returns it.

    Typed ``Any`` so that this module does not import onnxruntime.
    """
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    return options
