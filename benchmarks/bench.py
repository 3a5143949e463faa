"""``cosyagent bench``: voice-to-voice latency, stage by stage, of 1, 2, 4 and 8 concurrent
conversations with cosyagent (over the Realtime WebSocket and over WebRTC) and with a stock
pipecat pipeline (benchmarks/baseline/: Whisper, SmolLM2 and Kokoro, cosyagent's embedded stack
before issue #13).

    cosyagent bench                                   # everything: over an hour on 2 cores
    cosyagent bench --sessions 1 --targets websocket  # one quick look (~1.5 min)
    cosyagent bench --sessions 4 --targets websocket --repeat 5   # four sessions, five times: the spread
    python -m benchmarks.bench --help                 # the same, without the CLI

Each session speaks real recorded utterances (tests/data) in real time, waits for every reply
to play out, then interrupts a few replies (benchmarks/records.py defines every metric). The
servers are started here on free ports, a fresh one for every session count and repeat (or
``--url`` measures a running cosyagent). First the machine's own speed is measured and kept with
the results (benchmarks/machine_speed.py: shared machines change speed from day to day). Results:
a table on stdout, JSON and three PNG plots in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks import harness, machine_speed
from benchmarks.bench_report import COLUMNS, TARGETS_MS, cell, judge, print_report
from benchmarks.records import (
    BARGE_METRICS,
    CLIP_SETS,
    LONG_REPLY_S,
    MIC_LAG_ERROR_S,
    ROOT,
    TURN_METRICS,
    Plan,
    SessionRecord,
)
from benchmarks.repeats import repeat_summary
from benchmarks.webrtc_caller import loopback_candidates
from cosyagent.talk import Clip

logger = logging.getLogger("bench")

Driver = Callable[[str, int, list[Clip], Plan], Awaitable[SessionRecord]]
DRIVERS = {  # target -> module with run_session
    "websocket": "benchmarks.ws_driver",
    "webrtc": "benchmarks.webrtc_driver",
    "baseline": "benchmarks.baseline.driver",
}
STAGGER_S = 0.7  # concurrent sessions start this far apart, as real callers do


@dataclass
class Run:
    """One target at one level of concurrency."""

    target: str
    sessions: int
    records: list[SessionRecord]
    cpu: dict[str, Any]
    memory: dict[str, float | None]
    seconds: float
    admission: str = "all"  # --admission: every session admitted, or the server's own limits
    repeats: list[dict[str, Any]] = field(default_factory=list)  # each repeat's own statistics (--repeat)

    def values(self) -> dict[str, list[float]]:
        values: dict[str, list[float]] = {key: [] for key in [*TURN_METRICS, *BARGE_METRICS]}
        for record in self.records:
            rows = [t for t in record.turns if t.get("ok")] + [b for b in record.barge_ins if "skipped" not in b]
            for row in rows:
                for key, series in values.items():
                    if row.get(key) is not None:
                        series.append(float(row[key]))
        return values

    def _late_microphones(self) -> list[str]:
        """An error for each session whose microphone lagged past MIC_LAG_ERROR_S."""
        return [
            f"session {r.index}: the microphone fell {r.mic_lag_ms / 1000:.2f} s behind real time: "
            "the bench's client, not the server, would be much of what was measured"
            for r in self.records
            if r.mic_lag_ms is not None and r.mic_lag_ms > MIC_LAG_ERROR_S * 1000
        ]

    def _long_replies(self) -> list[str]:
        """A note when some replies ran past LONG_REPLY_S of speech (the answers to barge-ins too)."""
        rows = [row for r in self.records for row in [*r.turns, *(b["answer"] for b in r.barge_ins if "answer" in b)]]
        seconds = [float(row["reply_audio_s"]) for row in rows if row.get("reply_audio_s") is not None]
        long = [s for s in seconds if s > LONG_REPLY_S]
        if not long:
            return []
        return [
            f"{len(long)} of {len(seconds)} replies ran over {LONG_REPLY_S:.0f} s of speech "
            f"(longest {max(long):.1f} s): the LLM answered at length, and that work loaded the other turns of this run"
        ]

    def refusals(self) -> list[dict[str, Any]]:
        return [r.refused for r in self.records if r.refused is not None]

    def report(self) -> dict[str, Any]:
        values = self.values()
        refusals = self.refusals()
        return {
            "target": self.target,
            "sessions": self.sessions,
            "seconds": self.seconds,
            "admission": self.admission,
            "sessions_refused": len(refusals),
            "refusal_codes": sorted({r["code"] for r in refusals}),
            "refused_after_ms_max": max((r["after_ms"] for r in refusals), default=None),
            "summary_ms": {key: harness.summarize(series) for key, series in values.items() if series},
            "values_ms": values,
            "turns_ok": sum(bool(t.get("ok")) for r in self.records for t in r.turns),
            "turns_failed": sum(not t.get("ok") for r in self.records for t in r.turns),
            "barge_ins_measured": sum("skipped" not in b for r in self.records for b in r.barge_ins),
            "barge_ins_skipped": sum("skipped" in b for r in self.records for b in r.barge_ins),
            "errors": [e for r in self.records for e in r.errors] + self._late_microphones(),
            "notes": [n for r in self.records for n in r.notes] + self._long_replies(),
            "server_cpu": self.cpu,
            "server_memory": self.memory,
            "records": [r.__dict__ for r in self.records],
            **({"repeats": self.repeats} if self.repeats else {}),
        }


def combine(repeats: list[Run]) -> Run:
    """Repeats of one target and session count as one run: every turn pooled, each repeat's own
    statistics kept; the server's CPU is the first repeat's, its memory the highest peak."""
    first = repeats[0]
    if len(repeats) == 1:
        return first
    peaks = [run.memory.get("peak_mib") for run in repeats]
    memory = {**first.memory, "peak_mib": max((p for p in peaks if p is not None), default=None)}
    records = [record for run in repeats for record in run.records]
    spread = [repeat_summary(run.values(), run.seconds, len(run.refusals())) for run in repeats]
    seconds = round(sum(run.seconds for run in repeats), 1)
    return Run(first.target, first.sessions, records, first.cpu, memory, seconds, first.admission, spread)


def driver(target: str) -> Driver:
    run_session: Driver = importlib.import_module(DRIVERS[target]).run_session
    return run_session


async def _drive(run_session: Driver, url: str, count: int, clips: list[Clip], plan: Plan) -> list[SessionRecord]:
    async def one(index: int) -> SessionRecord:
        await asyncio.sleep(index * STAGGER_S)
        return await run_session(url, index, clips, plan)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def measure(target: str, url: str, pid: int | None, count: int, clips: list[Clip], args: argparse.Namespace) -> Run:
    if args.quiet_wait > 0:
        harness.wait_until_quiet(args.quiet_wait)
    plan = Plan(turns=args.turns, barge_ins=args.barge_ins, timeout_s=args.timeout)
    logger.info("%s: %d session(s), %d turns + %d barge-ins each", target, count, plan.turns, plan.barge_ins)
    started = time.monotonic()
    cpu, memory = harness.CpuMeter(pid), harness.MemorySampler(pid)
    with loopback_candidates():  # WebRTC callers offer 127.0.0.1 only: traffic stays on loopback
        records = asyncio.run(_drive(driver(target), url, count, clips, plan))
    seconds = round(time.monotonic() - started, 1)
    return Run(
        target, count, records, cpu.stop(), memory.stop(), seconds, args.admission if target != "baseline" else "all"
    )


@contextlib.contextmanager
def cosyagent_server(args: argparse.Namespace) -> Iterator[tuple[str, int | None]]:
    """The server under test: ``--url``, or ``cosyagent serve`` on a free port (with ``--config``'s
    settings, if given) and a throwaway data directory; with ``--admission all`` it has room for the
    largest session count (its capacity too, unless the config sets one)."""
    if args.url:
        yield args.url, None
        return
    most = max(args.sessions)
    settings: dict[str, Any] = (yaml.safe_load(args.config.read_text()) or {}) if args.config else {}
    with tempfile.TemporaryDirectory(prefix="cosyagent-bench-") as folder:
        server = settings.setdefault("server", {})
        server.setdefault("data_dir", f"{folder}/data")
        webrtc = settings.setdefault("webrtc", {})
        if args.admission == "all":
            # Every session is admitted, to measure the engines past saturation (a --config's
            # limits are raised to the largest session count, its capacity kept if it sets one).
            server["max_sessions"] = max(server.get("max_sessions", 16), most)
            server.setdefault("capacity", server["max_sessions"])
            webrtc["max_calls"] = max(webrtc.get("max_calls", 4), most)
        webrtc.setdefault("host_addresses", ["127.0.0.1"])  # loopback only, like the callers
        config = Path(folder) / "config.yaml"
        config.write_text(yaml.safe_dump(settings))
        with harness.spawned_server(extra_args=["--config", str(config)]) as (url, pid):
            yield url, pid


def server_for(target: str, args: argparse.Namespace) -> contextlib.AbstractContextManager[tuple[str, int | None]]:
    if target == "baseline":
        spawned: contextlib.AbstractContextManager[tuple[str, int | None]] = importlib.import_module(
            "benchmarks.baseline.server"
        ).spawned_baseline()
        return spawned
    return cosyagent_server(args)


def run_all(args: argparse.Namespace, save: Callable[[list[Run], dict[str, Any]], None]) -> None:
    """Every target at every session count; ``save`` gets the runs so far after each one, so an
    interrupted benchmark keeps what it measured."""
    clips = CLIP_SETS[args.clips]()
    logger.info("%d %s from tests/data", len(clips), args.clips)
    runs: list[Run] = []
    servers: dict[str, Any] = {}
    if args.url and (args.repeat > 1 or len(args.sessions) > 1):
        logger.warning("--url: every measurement shares that server; later ones find the questions' prompts cached")
    for target in args.targets:
        for count in args.sessions:
            repeats = []
            for _ in range(args.repeat):
                # A fresh server each time: one that served these questions before keeps their
                # prompts in the LLM's slots, and a new session's first turn then reads ~1 prompt
                # token instead of ~20 (first token 44-46 ms against 140 in the first repeat,
                # docs/benchmarks.md), which no new caller with a new question gets.
                with server_for(target, args) as (url, pid):
                    if target not in servers:
                        servers[target] = harness.server_health(url) if target != "baseline" else {"url": url}
                    repeats.append(measure(target, url, pid, count, clips, args))
            runs.append(combine(repeats))
            print_run(runs[-1])
            save(runs, servers)


# --- the report ------------------------------------------------------------------------------------


def print_run(run: Run) -> None:
    report = run.report()
    cells = [cell(report["summary_ms"], metric, stat) for metric, stat, _ in COLUMNS]
    shown = " ".join(f"{header}={value}" for (_, _, header), value in zip(COLUMNS, cells, strict=True))
    print(f"{run.target:>9} ×{run.sessions}: {shown}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cosyagent bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,2,4,8", help="concurrent session counts (default 1,2,4,8)")
    parser.add_argument(
        "--targets", default="websocket,webrtc,baseline", help="any of websocket, webrtc, baseline (default all)"
    )
    parser.add_argument("--turns", type=int, default=6, help="turns per session (default 6)")
    parser.add_argument(
        "--clips",
        choices=sorted(CLIP_SETS),
        default="utterances",
        help="what the sessions say: utterances cut from a lecture and a news clip at their pauses"
        " (default), or the finished spoken questions",
    )
    parser.add_argument("--barge-ins", type=int, default=2, help="barge-in trials per session (default 2)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each session count this many times, each on a fresh server, pooled (default 1)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a turn after this many quiet seconds")
    parser.add_argument(
        "--admission",
        choices=("all", "shipped"),
        default="all",
        help="all: every session admitted, the server's limits raised (default); shipped: the server's own"
        " admission (server.capacity, max_sessions, webrtc.max_calls, or --config's), sessions past it"
        " counted as refused up front",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="measure a running cosyagent (base URL, e.g. http://127.0.0.1:8188/v1)")
    where.add_argument("--config", type=Path, help="a cosyagent config for the server the bench starts")
    parser.add_argument("--quiet-wait", type=float, default=0.0, help="wait up to this long for an idle machine first")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="output folder")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    try:
        args.sessions = sorted({int(n) for n in args.sessions.split(",")})
    except ValueError:
        parser.error(f"--sessions must be numbers separated by commas, not {args.sessions!r}")
    if min(args.sessions) < 1:
        parser.error("--sessions must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(DRIVERS)
    if unknown or not args.targets:
        parser.error(f"--targets must be among {', '.join(DRIVERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = dt.datetime.now().astimezone()
    path = harness.result_path(args.results, "bench", started)
    report: dict[str, Any] = {}
    code = None if args.url else harness.server_code()
    if code is not None:
        logger.info("the servers run the code in %(source)s, commit %(commit)s (modified: %(modified)s)", code)
    speed = machine_speed.measure_apart()  # before any server starts: the machine's speed today
    if speed is not None:
        logger.info("the machine's speed: %(moonshine_ms)d ms (%(work)s)", speed)

    def save(runs: list[Run], servers: dict[str, Any]) -> None:
        report.clear()
        report.update(
            {
                "benchmark": "bench",
                "started": started.isoformat(timespec="seconds"),
                "seconds": round((dt.datetime.now().astimezone() - started).total_seconds(), 1),
                "plan": {
                    "sessions": args.sessions,
                    "targets": args.targets,
                    "turns": args.turns,
                    "barge_ins": args.barge_ins,
                    "clips": args.clips,
                    "repeat": args.repeat,
                    "admission": args.admission,
                    "server_config": str(args.config) if args.config else None,
                },
                "metrics": TURN_METRICS | BARGE_METRICS,
                "machine": harness.machine_info() | {"speed": speed},
                "code": code,  # the source tree and commit the spawned servers ran (None with --url)
                "servers": servers,
                "targets_ms": TARGETS_MS,
                "runs": [run.report() for run in runs],
            }
        )
        judge(report)
        harness.write_result(path, report)

    run_all(args, save)
    if not report:
        return 1
    print_report(report, path, plots=not args.no_plots)
    reports = report["runs"]
    failed = sum(run["turns_failed"] for run in reports) or not any(run["turns_ok"] for run in reports)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
