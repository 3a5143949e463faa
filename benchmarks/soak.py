"""Churn and soak: sessions opened and closed over and over, then a look for what they left behind.

The server runs in this process (uvicorn in the same event loop, real engines from the
config), so its asyncio tasks, threads and open file descriptors can be counted; the clients
are the official openai SDK's Realtime connections to 127.0.0.1. Two phases, ``--sessions``
at a time:

- **churn** (``--churn N``): N short sessions, each asking one question (text in, a spoken
  reply ``--max-tokens`` long) and closing; every ``--vanish-every``-th drops its socket at the
  reply's first audio.
- **soak** (``--minutes``): sessions that *speak* real recorded questions (tests/data) in real
  time, ``--turns`` turns and ``--barge-ins`` barge-ins each, then close and start again (``--talk text``:
  the churn's text sessions instead).

Resources (and ``/metrics``) are read after each phase, once the server has gone quiet (no
session counted, engine queues empty): ``before`` (after one warm-up round at full
concurrency of both kinds, so that thread pools have grown to what the load needs), ``after churn``,
``middle`` (half-way through the soak) and ``after``; all but the first wait (at most a
minute) for sockets being closed to go. Anything above ``before`` then is left behind; a leak
also shows as growth from middle to after. The exit status is 1 on a leak, a session still
counted, an error, or RSS more than ``--max-rss-growth`` above ``before``.

    python -m benchmarks.soak --sessions 4 --churn 200 --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import itertools
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from openai import AsyncOpenAI, OpenAIError
from websockets.exceptions import WebSocketException

from benchmarks.records import Plan, questions
from benchmarks.ws_driver import run_session
from cosyagent.config import Config, load_config
from cosyagent.runtime import Runtime
from cosyagent.talk.turn import SAID_TO_ITS_END
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
    python_objects: int  # objects the garbage collector tracks, after a collection
    active_sessions: int
    metrics_sessions: float  # cosyagent_active_sessions summed over transports, as /metrics says
    responses: str  # cosyagent_responses_total by status, from /metrics


@dataclass
class SoakResult:
    served: int = 0
    vanished: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text_first_audio_ms: list[float] = field(default_factory=list)  # text sessions: response.create -> audio
    voice_to_voice_ms: list[float] = field(default_factory=list)  # spoken turns: end of speech -> reply audio
    resources: dict[str, Resources] = field(default_factory=dict)
    object_types: dict[str, Counter[str]] = field(default_factory=dict)  # gc-tracked objects by type, per phase


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def scrape(base_url: str) -> tuple[float, str]:
    """From /metrics: the active sessions (all transports) and the responses ended, by status."""
    root = base_url.removesuffix("/v1")
    async with httpx.AsyncClient(timeout=10.0) as http:
        text = (await http.get(f"{root}/metrics")).text
    active, statuses = 0.0, []
    for line in text.splitlines():
        if line.startswith("cosyagent_active_sessions{"):
            active += float(line.rsplit(" ", 1)[1])
        elif line.startswith("cosyagent_responses_total{"):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            statuses.append(f"{status} {float(line.rsplit(' ', 1)[1]):.0f}")
    return active, ", ".join(statuses)


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return round(next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024, 1)


async def snapshot(runtime: Runtime, base_url: str) -> Resources:
    metrics_sessions, responses = await scrape(base_url)
    return Resources(
        fds=len(os.listdir("/proc/self/fd")),
        threads=threading.active_count(),
        tasks=len(asyncio.all_tasks()),
        rss_mib=rss_mib(),
        python_objects=len(gc.get_objects()),
        active_sessions=runtime.active_sessions,
        metrics_sessions=metrics_sessions,
        responses=responses,
    )


async def settled(runtime: Runtime, base_url: str, baseline: Resources | None = None) -> Resources:
    """The resources once the server is quiet: no session counted, the engine queues empty and,
    given a ``baseline``, no more tasks, threads or fds than it (a socket being closed takes a
    moment). Bounded: after ``QUIET_TIMEOUT_S`` it returns what it sees, excess included."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    while True:
        gc.collect()  # a closed client's objects (the clients live in this process) are not the server's
        now = await snapshot(runtime, base_url)
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
                if event.response.status not in SAID_TO_ITS_END:  # (incomplete: the token cap, all said)
                    raise RuntimeError(f"response {event.response.status}")
                return first
        raise RuntimeError("the server closed the session")


async def churn(
    base_url: str,
    sessions: int,
    seconds: float,
    max_tokens: int,
    vanish_every: int,
    result: SoakResult,
    count: int | None = None,
) -> None:
    """``sessions`` workers opening text sessions one after another until ``seconds`` have
    passed or, given ``count``, until that many sessions have been opened."""
    deadline = time.monotonic() + seconds
    counter = itertools.count(1)
    sdk = AsyncOpenAI(base_url=base_url, api_key="soak", max_retries=0)

    async def worker() -> None:
        while time.monotonic() < deadline:
            number = next(counter)
            if count is not None and number > count:
                return
            vanish = vanish_every > 0 and number % vanish_every == 0
            try:
                first = await one_session(sdk, QUESTIONS[number % len(QUESTIONS)], max_tokens, vanish)
            except (RuntimeError, TimeoutError, OSError, OpenAIError, WebSocketException) as exc:  # counted; go on
                result.errors.append(f"session {number}: {exc!r}")
                continue
            result.served += 1
            result.vanished += vanish
            if first is not None:
                result.text_first_audio_ms.append(first)

    try:
        await asyncio.gather(*(worker() for _ in range(sessions)))
    finally:
        await sdk.close()


async def talk(base_url: str, sessions: int, seconds: float, plan: Plan, result: SoakResult) -> None:
    """``sessions`` workers each speaking real questions, session after session, until ``seconds``
    have passed: ``plan``'s turns and barge-ins a session (benchmarks/ws_driver.py)."""
    deadline = time.monotonic() + seconds
    clips = questions()
    counter = itertools.count()
    turns = plan.turns

    async def worker() -> None:
        while time.monotonic() < deadline:
            record = await run_session(base_url, next(counter), clips, plan)
            result.served += 1
            result.errors += [f"spoken session {record.index}: {error}" for error in record.errors]
            # A late microphone is a note however late: the clients share the server's event loop.
            result.notes += [f"spoken session {record.index}: {note}" for note in record.notes]
            turns_ok = [turn for turn in record.turns if turn.get("ok")]
            if len(turns_ok) < turns:
                result.errors.append(f"spoken session {record.index}: {len(turns_ok)} of {turns} turns answered")
            result.voice_to_voice_ms += [t["voice_to_voice_ms"] for t in turns_ok if t.get("voice_to_voice_ms")]

    await asyncio.gather(*(worker() for _ in range(sessions)))


async def soak(runtime: Runtime, base_url: str, args: argparse.Namespace) -> SoakResult:
    plan = Plan(turns=args.turns, barge_ins=args.barge_ins, timeout_s=SESSION_TIMEOUT_S / 2)
    result = SoakResult()
    warm_up = SoakResult()
    # One round of each kind at full concurrency, so that thread pools and model arenas have
    # grown to what the load needs before the baseline is read.
    await churn(base_url, args.sessions, 0.1, args.max_tokens, 0, warm_up)
    if args.talk == "speech":
        await talk(base_url, args.sessions, 0.1, plan, warm_up)
    result.resources["before"] = before = await settled(runtime, base_url)
    result.object_types["before"] = object_types()
    if args.churn:
        await churn(base_url, args.sessions, 1e9, args.max_tokens, args.vanish_every, result, count=args.churn)
        result.resources["after churn"] = await settled(runtime, base_url, before)
    half = args.minutes * 60 / 2
    for phase in ("middle", "after"):
        if args.talk == "speech":
            await talk(base_url, args.sessions, half, plan, result)
        else:
            await churn(base_url, args.sessions, half, args.max_tokens, args.vanish_every, result)
        result.resources[phase] = await settled(runtime, base_url, before)
        result.object_types[phase] = object_types()
    return result


def object_types() -> Counter[str]:
    """The garbage collector's objects by type name: what a Python-level leak would pile up."""
    return Counter(type(item).__qualname__ for item in gc.get_objects())


def object_growth(result: SoakResult, top: int = 5) -> str:
    """The types whose count grew most from before to after, e.g. ``dict +12, Frame +3``."""
    growth = result.object_types["after"] - result.object_types["before"]
    return ", ".join(f"{name} +{count}" for name, count in growth.most_common(top)) or "none"


def rss_growth(result: SoakResult) -> float:
    """How much RSS grew from ``before`` to ``after``, as a fraction of ``before``."""
    before, after = result.resources["before"], result.resources["after"]
    return after.rss_mib / before.rss_mib - 1.0


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


def table(result: SoakResult, args: argparse.Namespace) -> str:
    def spread(values: list[float]) -> str:
        return f"p50 {_ms(percentile(values, 50))} ms, p95 {_ms(percentile(values, 95))} ms"

    lines = [
        f"{args.sessions} at a time: {args.churn} churned, then {args.minutes * 60:.0f} s of {args.talk} sessions; "
        f"{result.served} served ({result.vanished} vanished mid-reply), {len(result.errors)} errors; "
        f"text sessions' first audio after response.create {spread(result.text_first_audio_ms)}; "
        f"spoken turns' voice-to-voice {spread(result.voice_to_voice_ms)}; "
        f"RSS {rss_growth(result):+.1%} before -> after",
        "",
        "| when | open fds | threads | asyncio tasks | RSS MiB | Python objects | active sessions (runtime, /metrics) "
        "| responses (/metrics) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for when, r in result.resources.items():
        lines.append(
            f"| {when} | {r.fds} | {r.threads} | {r.tasks} | {r.rss_mib} | {r.python_objects} | "
            f"{r.active_sessions}, {r.metrics_sessions:.0f} | {r.responses} |"
        )
    lines.append(f"\nPython object types grown most, before -> after: {object_growth(result)}")
    lines += [f"error: {error}" for error in result.errors[:10]]
    lines += [f"note: {note}" for note in result.notes[:5]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2, help="concurrent sessions (default 2)")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to churn (default 2)")
    parser.add_argument("--config", help="server config file (default: the embedded stack)")
    parser.add_argument("--max-tokens", type=int, default=24, help="reply length (default 24 tokens)")
    parser.add_argument("--vanish-every", type=int, default=3, help="every Nth session leaves mid-reply (0: none)")
    parser.add_argument("--churn", type=int, default=0, help="short text sessions before the soak (default 0)")
    parser.add_argument(
        "--talk", choices=("speech", "text"), default="speech", help="soak sessions speak real clips (default) or text"
    )
    parser.add_argument("--turns", type=int, default=2, help="speech: turns a session (default 2)")
    parser.add_argument(
        "--barge-ins", type=int, default=1, help="speech: barge-ins a session, after its turns (default 1)"
    )
    parser.add_argument(
        "--max-rss-growth", type=float, default=0.05, help="fail above this RSS growth before -> after (default 0.05)"
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.churn < 0 or args.minutes <= 0 or args.turns < 1 or args.barge_ins < 0:
        parser.error("--sessions and --turns must be at least 1, --churn and --barge-ins at least 0, --minutes above 0")
    return args


async def run(args: argparse.Namespace) -> SoakResult:
    config = load_config(args.config)
    # Room for twice the workers: a vanished client's slot is freed once the server has seen its
    # socket close, a moment after the worker has moved on to its next session.
    admitted = 2 * args.sessions
    server = dataclasses.replace(config.server, capacity=admitted, max_sessions=admitted)
    async with in_process_server(dataclasses.replace(config, server=server)) as (runtime, url):
        return await soak(runtime, url, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = asyncio.run(run(args))
    print(table(result, args))
    before, after = result.resources["before"], result.resources["after"]
    leaked = after.fds > before.fds or after.threads > before.threads or after.tasks > before.tasks
    counted = after.active_sessions or after.metrics_sessions
    return 1 if leaked or counted or result.errors or rss_growth(result) > args.max_rss_growth else 0


if __name__ == "__main__":
    raise SystemExit(main())
