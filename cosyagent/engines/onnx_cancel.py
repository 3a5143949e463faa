"""onnxruntime runs that a cancel token stops mid-inference (``RunOptions.terminate``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cosyagent.engines.base import CancelToken, EngineCancelled

if TYPE_CHECKING:
    import onnxruntime as ort

# onnxruntime's severity levels: 0 verbose ... 3 error, 4 fatal.
_FATAL_ONLY = 4


@contextlib.contextmanager
def terminable_run_options(cancel: CancelToken | None) -> Iterator[ort.RunOptions]:
    """RunOptions for the runs of one engine call: cancelling ``cancel`` terminates the run in
    progress and every later one, and whatever the call then raises (onnxruntime's generic
    failure, or the engine's error wrapping it) leaves the block as :class:`EngineCancelled`.

    A run we terminate is no error, yet onnxruntime prints a red "Exiting due to terminate flag"
    line for it, on every barge-in and every resumed pause; so these runs log fatal errors only. A
    run that fails for real still raises, with its message, for the engine to report."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = _FATAL_ONLY
    unregister = cancel.on_cancel(lambda: setattr(options, "terminate", True)) if cancel else None
    try:
        yield options
    except Exception as exc:
        if cancel is not None and cancel.cancelled and not isinstance(exc, EngineCancelled):
            raise EngineCancelled() from exc
        raise
    finally:
        if unregister is not None:
            unregister()
