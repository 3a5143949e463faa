"""One report from ``cosyagent bench`` runs taken separately, e.g. N = 1, 2, 4 in one run and
N = 8 in another:

    python -m benchmarks.merge benchmarks/results/bench-2026-11-21.json /tmp/n8/bench-2026-11-21.json \\
        --out benchmarks/results/bench-2026-11-21-all.json

The runs are put side by side (each target and session count once), the ratios and verdicts
recomputed from them, and the table and plots made as ``cosyagent bench`` makes them. Reports
measured with different plans (turns, barge-ins, server config) are refused: their numbers do
not compare. A target and session count found in two reports is refused too, unless
``--replace`` says that the later report's run (a rerun, say after a fix) replaces it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.bench import DRIVERS
from benchmarks.bench_report import judge, print_report
from benchmarks.harness import write_result

_SAME_PLAN = ("turns", "barge_ins", "server_config")


class MergeError(ValueError):
    pass


def merge(reports: list[dict[str, Any]], sources: list[str], replace: bool = False) -> dict[str, Any]:
    """The reports' runs in one report (ordered by target, then session count), judged afresh;
    with ``replace``, a later report's run replaces an earlier one's."""
    if not reports:
        raise MergeError("nothing to merge")
    for report, source in zip(reports, sources, strict=True):
        if report.get("benchmark") != "bench" or not isinstance(report.get("runs"), list):
            raise MergeError(f"{source}: not a cosyagent bench report")
    first = reports[0]
    for report, source in zip(reports[1:], sources[1:], strict=True):
        for setting in _SAME_PLAN:
            if report["plan"].get(setting) != first["plan"].get(setting):
                raise MergeError(
                    f"{source}: plan {setting}={report['plan'].get(setting)!r} differs from "
                    f"{sources[0]}'s {first['plan'].get(setting)!r}"
                )
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    taken_from: dict[tuple[str, int], str] = {}
    for report, source in zip(reports, sources, strict=True):
        for run in report["runs"]:
            key = (run["target"], run["sessions"])
            if key in runs and not replace:
                raise MergeError(f"{source}: {run['target']} ×{run['sessions']} is in two of the reports")
            runs[key], taken_from[key] = run, source
    order = list(DRIVERS)
    ordered = [runs[key] for key in sorted(runs, key=lambda k: (order.index(k[0]), k[1]))]
    merged = {
        **first,
        "started": min(report["started"] for report in reports),
        "seconds": round(sum(report["seconds"] for report in reports), 1),
        "plan": {
            **first["plan"],
            "sessions": sorted({run["sessions"] for run in ordered}),
            "targets": [target for target in order if any(run["target"] == target for run in ordered)],
        },
        "servers": {k: v for report in reports for k, v in report["servers"].items()},
        "merged_from": [
            {
                "file": source,
                "started": report["started"],
                "machine": report["machine"],
                "runs": [f"{target} ×{n}" for (target, n), taken in sorted(taken_from.items()) if taken == source],
            }
            for report, source in zip(reports, sources, strict=True)
        ],
        "runs": ordered,
    }
    judge(merged)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench JSON reports")
    parser.add_argument("--out", type=Path, required=True, help="the merged JSON (plots beside it)")
    parser.add_argument("--replace", action="store_true", help="a later report's run replaces an earlier one's")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    try:
        reports = [json.loads(path.read_text()) for path in args.reports]
        merged = merge(reports, [str(path) for path in args.reports], replace=args.replace)
    except (OSError, json.JSONDecodeError, KeyError, MergeError) as exc:
        print(f"cannot merge: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, merged)
    print_report(merged, args.out, plots=not args.no_plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
