"""The RunOptions every cancellable ONNX engine call runs with."""

from __future__ import annotations

import pytest

from cosyagent.engines.base import CancelToken, EngineCancelled, EngineError
from cosyagent.engines.onnx_cancel import terminable_run_options


def test_cancelling_terminates_the_runs_and_they_log_fatal_errors_only() -> None:
    token = CancelToken()
    with terminable_run_options(token) as options:
        assert options.log_severity_level == 4 and not options.terminate
        token.cancel()
        assert options.terminate


def test_a_token_cancelled_after_the_call_leaves_its_options_alone() -> None:
    token = CancelToken()
    with terminable_run_options(token) as options:
        pass
    token.cancel()
    assert not options.terminate


def test_an_already_cancelled_token_terminates_at_once_and_no_token_never_does() -> None:
    token = CancelToken()
    token.cancel()
    with terminable_run_options(token) as options:
        assert options.terminate
    with terminable_run_options(None) as options:
        assert not options.terminate and options.log_severity_level == 4


def test_what_a_cancelled_call_raises_leaves_as_engine_cancelled_and_other_errors_pass() -> None:
    token = CancelToken()
    with pytest.raises(EngineError, match="a real failure"), terminable_run_options(token):
        raise EngineError("a real failure")
    token.cancel()
    with pytest.raises(EngineCancelled) as caught, terminable_run_options(token):
        raise EngineError("Piper failed on a clause: Exiting due to terminate flag")
    assert isinstance(caught.value.__cause__, EngineError)
