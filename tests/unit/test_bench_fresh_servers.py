"""``cosyagent bench`` measures every session count and repeat on a server of its own: one that
served the same questions before holds their prompts in the LLM's slots, and a new session's
first turn would read ~1 prompt token instead of ~20 (docs/benchmarks.md, 2026-12-04)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench
from benchmarks.records import SessionRecord


def test_each_session_count_and_repeat_gets_a_fresh_server(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    measured: list[tuple[str, int, str]] = []

    @contextlib.contextmanager
    def server_for(target: str, args: Any) -> Iterator[tuple[str, int | None]]:
        started.append(target)
        yield f"http://127.0.0.1:9/server-{len(started)}", None

    def measure(target: str, url: str, pid: int | None, count: int, clips: Any, args: Any) -> bench.Run:
        measured.append((target, count, url))
        turn = {"ok": True, "voice_to_voice_ms": 900.0}
        return bench.Run(target, count, [SessionRecord(index=0, turns=[turn])], {}, {"peak_mib": 1.0}, 1.0)

    monkeypatch.setattr(bench, "server_for", server_for)
    monkeypatch.setattr(bench, "measure", measure)
    monkeypatch.setattr(bench.harness, "server_health", lambda url: {"url": url})
    saved: list[list[bench.Run]] = []
    args = bench.parse_args(["--sessions", "1,4", "--targets", "websocket", "--repeat", "3", "--clips", "questions"])
    bench.run_all(args, lambda runs, servers: saved.append(list(runs)))

    assert started == ["websocket"] * 6
    assert len({url for _, _, url in measured}) == 6  # no measurement reused another's server
    assert [(target, count) for target, count, _ in measured] == [("websocket", 1)] * 3 + [("websocket", 4)] * 3
    assert [(run.sessions, len(run.repeats)) for run in saved[-1]] == [(1, 3), (4, 3)]


def test_a_running_server_is_shared_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bench, "measure", lambda *a: bench.Run("websocket", a[3], [], {}, {}, 1.0))
    monkeypatch.setattr(bench.harness, "server_health", lambda url: {"url": url})
    args = bench.parse_args(["--url", "http://127.0.0.1:9/v1", "--targets", "websocket", "--repeat", "2"])
    with caplog.at_level(logging.WARNING, logger=bench.logger.name):
        bench.run_all(args, lambda runs, servers: None)
    assert "later ones find the questions' prompts cached" in caplog.text


def test_the_report_names_the_code_its_servers_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A spawned server (``python -m cosyagent.cli``) imports the checkout it is started in, ahead
    of PYTHONPATH: an A/B "against a worktree" started from the main checkout ran the main
    checkout's code on both sides. The report says which tree and commit the servers ran."""
    repository = Path(bench.__file__).resolve().parents[1]
    monkeypatch.chdir(repository)
    code = bench.harness.server_code()
    assert code["source"] == str(repository)
    if (repository / ".git").exists():
        assert code["commit"] and all(c in "0123456789abcdef" for c in code["commit"])
        assert isinstance(code["modified"], bool)
    other = tmp_path / "other-checkout"
    (other / "cosyagent").mkdir(parents=True)
    (other / "cosyagent" / "__init__.py").write_text("")
    monkeypatch.chdir(other)
    monkeypatch.setenv("PYTHONPATH", str(repository))
    assert bench.harness.server_code() == {"source": str(other), "commit": None, "modified": None}
