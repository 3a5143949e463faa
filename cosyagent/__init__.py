"""cosyagent: a self-hosted, real-time voice agent speaking the OpenAI Realtime API."""

import os

# numpy's OpenBLAS keeps a worker thread per extra core that busy-waits ~70 ms after every
# matrix product (audio features for the language check and Smart Turn, resampling): a core
# spinning at normal priority while llama.cpp (niced) reads a prompt. The products here are
# small; one thread computes them as fast. Set before anything imports numpy; a user's own
# value wins. Measured: docs/benchmarks.md, "OpenBLAS's spinning thread".
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
