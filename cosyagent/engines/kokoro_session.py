"""The ONNX session kokoro-onnx runs, as the engine prepares it: interruptible by a cancel token,
and with the duration predictor's frames exposed as an output (see :mod:`kokoro_timed`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosyagent.engines.base import CancelToken, EngineUnavailableError
from cosyagent.engines.onnx_cancel import terminable_run_options
from cosyagent.engines.onnx_outputs import exposed, single_op_output

if TYPE_CHECKING:
    from kokoro_onnx import Kokoro

logger = logging.getLogger(__name__)

DURATIONS_OUTPUT = "duration"  # the output name kokoro-onnx reads durations from


def durations_model(source: Path) -> Path | None:
    """``source`` with its durations exposed, or None (logged) when that cannot be done."""
    try:
        return exposed(source, single_op_output("Clip"), DURATIONS_OUTPUT)
    except (EngineUnavailableError, OSError) as exc:  # OSError: a cache folder it cannot write
        logger.warning("Kokoro will not time its words: %s", exc)
        return None


class InterruptibleSession:
    """Wraps kokoro-onnx's InferenceSession so that each ``run`` gets RunOptions that a
    cancel token can flip to ``terminate``: a barge-in stops a clause mid-inference
    instead of leaving the CPU busy for the rest of it (up to seconds on 2 cores)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.run_options: Any = None  # set per call, on the engine's single worker thread

    def run(self, output_names: Any, inputs: Any) -> Any:
        return self._session.run(output_names, inputs, run_options=self.run_options)

    def __getattr__(self, name: str) -> Any:  # get_inputs(), get_outputs()... as the real session
        return getattr(self._session, name)


@contextlib.contextmanager
def interruptible(kokoro: Kokoro, cancel: CancelToken | None) -> Iterator[None]:
    session = kokoro.sess
    if cancel is None or not isinstance(session, InterruptibleSession):
        yield
        return
    with terminable_run_options(cancel) as options:
        session.run_options = options
        try:
            yield
        finally:
            session.run_options = None
