"""Importing cosyagent leaves no thread that busy-waits after numpy's matrix products.

numpy's OpenBLAS keeps a worker per extra core that spins ~70 ms after each product; on 2 cores
that is a core taken from llama.cpp (niced) while it reads a prompt: one session answered
~160 ms later at p50 (docs/benchmarks.md, "OpenBLAS's spinning thread").
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Products of the size of the audio features (a mel filterbank over 3 s of frames), then the CPU
# the process burns while its main thread sleeps 200 ms.
PROBE = """
import resource, time
import cosyagent
import numpy as np
a, b = np.random.rand(80, 201), np.random.rand(201, 3000)
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
burned = []
for _ in range(3):
    a @ b
    before = cpu()
    time.sleep(0.2)
    burned.append(cpu() - before)
print(max(burned) * 1000)
"""


def idle_cpu_ms(env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no worker thread on one core")
def test_no_thread_spins_after_a_matrix_product() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    assert idle_cpu_ms(env) < 25  # measured 0.2 ms
    # The probe does see spinning where it happens: OpenBLAS with two threads, as numpy defaults to.
    assert idle_cpu_ms({**env, "OPENBLAS_NUM_THREADS": "2"}) > 40  # measured 118 ms
