"""benchmarks/machine_speed.py's failure paths (its measurement runs for real in tests/e2e/test_bench.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import machine_speed


def test_a_speed_that_cannot_be_measured_is_a_warning_and_the_benchmark_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the reference's process fails at once
    assert machine_speed.measure_apart(timeout_s=10) is None
    assert "the machine's speed was not measured" in caplog.text
    stuck = tmp_path / "stuck"
    stuck.write_text("#!/bin/sh\nexec sleep 30\n")
    stuck.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stuck))  # ... or never finishes
    assert machine_speed.measure_apart(timeout_s=0.5) is None
    assert "the reference took over 0.5 s" in caplog.text  # and was killed (subprocess.run)
    monkeypatch.setattr(sys, "executable", "/bin/true")  # ... or exits without a word
    assert machine_speed.measure_apart(timeout_s=10) is None
    assert "the reference printed ''" in caplog.text
