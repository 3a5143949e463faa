"""Churn and soak: sessions opened and closed over and over, then a look for what they left behind.

The server runs in this process (uvicorn in the same event loop, real engines from the
config), so its asyncio tasks, threads and open file descriptors can be counted; the clients
are the official openai SDK's Realtime connections to 127.0.0.1. ``--sessions`` workers each
open a session, ask a question (text in, a spoken reply out, ``--max-tokens`` long), wait for
the reply and close; every ``--vanish-every``-th session instead drops its socket at the
reply's first audio. They go on for ``--minutes``.

Resources are read three times, each after the server has gone quiet (no session counted,
engine queues empty): ``before`` (after one warm-up round at full concurrency, so that
thread pools have grown to what the load needs), ``middle`` (half-way) and ``after``; the
last two wait (at most a minute) for sockets being closed to go. Anything above ``before``
then is left behind; a leak also shows as growth from middle to after.

    python -m benchmarks.soak --sessions 4 --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from openai import AsyncOpenAI, OpenAIError
from websockets.exceptions import WebSocketException

from cosyagent.config import Config, load_config
from cosyagent.runtime import Runtime
from cosyagent.web.app import create_app

logger = logging.getLogger(__name__)

QUESTIONS = ("What is the capital of France?", "Name a fruit that is yellow.", "How many days are in a week?")
SESSION_TIMEOUT_S = 120.0
QUIET_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Resources:
    fds: int
    threads: int
    tasks: int
    rss_mib: float
    active_sessions: int


@dataclass
class SoakResult:
    served: int = 0
    vanished: int = 0
    errors: list[str] = field(default_factory=list)
    first_audio_ms: list[float] = field(default_factory=list)
    resources: dict[str, Resources] = field(default_factory=dict)

    def percentile(self, q: float) -> float | None:
        values = sorted(self.first_audio_ms)
        if not values:
            return None
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def snapshot(runtime: Runtime) -> Resources:
    rss_kib = next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS")
    )
    return Resources(
        fds=len(os.listdir("/proc/self/fd")),
        threads=threading.active_count(),
        tasks=len(asyncio.all_tasks()),
        rss_mib=round(rss_kib / 1024, 1),
        active_sessions=runtime.active_sessions,
    )


async def settled(runtime: Runtime, baseline: Resources | None = None) -> Resources:
    """The resources once the server is quiet: no session counted, the engine queues empty and,
    given a ``baseline``, no more tasks, threads or fds than it (a socket being closed takes a
    moment). Bounded: after ``QUIET_TIMEOUT_S`` it returns what it sees, excess included."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    while True:
        now = snapshot(runtime)
        idle = now.active_sessions == 0 and not any(runtime.queue_depths().values())
        back = baseline is None or (
            now.tasks <= baseline.tasks and now.threads <= baseline.threads and now.fds <= baseline.fds
        )
        if (idle and back) or time.monotonic() > deadline:
            if not (idle and back):
                logger.warning("the server did not return to its baseline within %.0f s: %s", QUIET_TIMEOUT_S, now)
            return now
        await asyncio.sleep(0.1)


async def one_session(sdk: AsyncOpenAI, question: str, max_tokens: int, vanish: bool) -> float | None:
    """One session, one spoken reply; returns ms from response.create to the first audio."""
    async with asyncio.timeout(SESSION_TIMEOUT_S), sdk.realtime.connect(model="cosyagent-realtime") as conn:
        await conn.session.update(
            session={"type": "realtime", "max_output_tokens": max_tokens, "audio": {"input": {"turn_detection": None}}}
        )
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]}
        )
        asked = time.monotonic()
        await conn.response.create()
        first: float | None = None
        async for event in conn:
            if event.type == "response.output_audio.delta" and first is None:
                first = (time.monotonic() - asked) * 1000
                if vanish:
                    return first  # leaving closes the socket mid-reply
            elif event.type == "error":
                raise RuntimeError(f"{event.error.code}: {event.error.message}")
            elif event.type == "response.done":
                if event.response.status != "completed":
                    raise RuntimeError(f"response {event.response.status}")
                return first
        raise RuntimeError("the server closed the session")


async def churn(
    base_url: str, sessions: int, seconds: float, max_tokens: int, vanish_every: int, result: SoakResult
) -> None:
    """``sessions`` workers opening sessions one after another until ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    counter = itertools.count(1)
    sdk = AsyncOpenAI(base_url=base_url, api_key="soak", max_retries=0)

    async def worker() -> None:
        while time.monotonic() < deadline:
            number = next(counter)
            vanish = vanish_every > 0 and number % vanish_every == 0
            try:
                first = await one_session(sdk, QUESTIONS[number % len(QUESTIONS)], max_tokens, vanish)
            except (RuntimeError, TimeoutError, OSError, OpenAIError, WebSocketException) as exc:  # counted; go on
                result.errors.append(f"session {number}: {exc!r}")
                continue
            result.served += 1
            result.vanished += vanish
            if first is not None:
                result.first_audio_ms.append(first)

    try:
        await asyncio.gather(*(worker() for _ in range(sessions)))
    finally:
        await sdk.close()


async def soak(
    runtime: Runtime, base_url: str, sessions: int, seconds: float, max_tokens: int, vanish_every: int
) -> SoakResult:
    result = SoakResult()
    warm_up = SoakResult()
    await churn(base_url, sessions, 0.1, max_tokens, 0, warm_up)  # one round at full concurrency
    result.resources["before"] = before = await settled(runtime)
    for phase in ("middle", "after"):
        await churn(base_url, sessions, seconds / 2, max_tokens, vanish_every, result)
        result.resources[phase] = await settled(runtime, before)
    return result


@contextlib.asynccontextmanager
async def in_process_server(config: Config) -> AsyncIterator[tuple[Runtime, str]]:
    """The app on a free 127.0.0.1 port in this event loop, until the block ends."""
    runtime = Runtime.from_config(config)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning", ws_ping_interval=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(2400):  # 240 s for the models to load
            if server.started or task.done():
                break
            await asyncio.sleep(0.1)
        if not server.started:
            task.result()
            raise RuntimeError("the server did not start in 240 s")
        yield runtime, f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(result: SoakResult, sessions: int, seconds: float) -> str:
    p50, p95 = result.percentile(50), result.percentile(95)
    lines = [
        f"{sessions} concurrent sessions for {seconds:.0f} s: {result.served} served "
        f"({result.vanished} vanished mid-reply), {len(result.errors)} errors; "
        f"first audio p50 {_ms(p50)} ms, p95 {_ms(p95)} ms",
        "",
        "| when | open fds | threads | asyncio tasks | RSS MiB | active sessions |",
        "|---|---|---|---|---|---|",
    ]
    for when, r in result.resources.items():
        lines.append(f"| {when} | {r.fds} | {r.threads} | {r.tasks} | {r.rss_mib} | {r.active_sessions} |")
    lines += [f"error: {error}" for error in result.errors[:10]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2, help="concurrent sessions (default 2)")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to churn (default 2)")
    parser.add_argument("--config", help="server config file (default: the embedded stack)")
    parser.add_argument("--max-tokens", type=int, default=24, help="reply length (default 24 tokens)")
    parser.add_argument("--vanish-every", type=int, default=3, help="every Nth session leaves mid-reply (0: none)")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> SoakResult:
    config = load_config(args.config)
    # Room for twice the workers: a vanished client's slot is freed once the server has seen its
    # socket close, a moment after the worker has moved on to its next session.
    admitted = 2 * args.sessions
    server = dataclasses.replace(config.server, capacity=admitted, max_sessions=admitted)
    async with in_process_server(dataclasses.replace(config, server=server)) as (runtime, url):
        return await soak(runtime, url, args.sessions, args.minutes * 60, args.max_tokens, args.vanish_every)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = asyncio.run(run(args))
    print(table(result, args.sessions, args.minutes * 60))
    before, after = result.resources["before"], result.resources["after"]
    leaked = after.fds > before.fds or after.threads > before.threads or after.tasks > before.tasks
    return 1 if leaked or after.active_sessions or result.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
