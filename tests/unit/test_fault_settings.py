"""The fault-handling settings: their defaults, and bad values refused with the key named."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml

from cosyagent.config import ConfigError, load_config
from cosyagent.engines.llama_process import describe_exit


def test_the_defaults_bound_every_wait() -> None:
    config = load_config(environ={})
    assert config.llm.timeout_s == 30 and config.llm.connect_timeout_s == 5
    assert config.llm.max_restarts == 5 and config.server.drain_timeout_s == 10


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("llm", "timeout_s", 0, "llm.timeout_s and llm.connect_timeout_s must be positive"),
        ("llm", "connect_timeout_s", -1, "llm.timeout_s and llm.connect_timeout_s must be positive"),
        ("llm", "max_restarts", -1, "llm.max_restarts must be >= 0"),
        ("llm", "seed", -1, "llm.seed must be a whole number >= 0 or null, not -1"),
        ("llm", "seed", 1.5, "llm.seed must be a whole number >= 0 or null, not 1.5"),
        ("llm", "seed", "any", "llm.seed must be a whole number >= 0 or null, not 'any'"),
        ("llm", "call_schema", "yes", "llm.call_schema must be true, false or null, not 'yes'"),
        ("server", "drain_timeout_s", -5, "server.drain_timeout_s must be >= 0"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, section: str, key: str, value: float, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({section: {key: value}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_exits_are_described_in_words() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-signal.SIGKILL) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-signal.SIGSEGV) == "killed by signal 11 (SIGSEGV)"
