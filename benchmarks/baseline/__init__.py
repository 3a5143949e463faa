"""The latency benchmark's baseline: the same embedded models assembled as a stock pipecat pipeline.

``pipecat_bot`` is the server (one pipecat pipeline per WebSocket connection), ``driver`` the
client side that ``benchmarks.bench`` runs against it.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a child before exec: Linux sends it SIGTERM when its parent dies, even by SIGKILL."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_child(command: list[str], log: IO[bytes], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A child process that dies with this one (on Linux), its output going to ``log``."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
