"""``cosyagent bench --repeat K``: the same target and session count measured K times in a row.

Four sessions of three turns are twelve turns, and their p95 is one or two of them: identical
code gave p95 1.9-2.9 s on fresh servers (docs/benchmarks.md). A run measured K times reports
every turn pooled (the table, the ratios and the verdicts use those) and, beside it, each
repeat's own p50 and p95, so a reader sees how far one repeat can be from another.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import summarize

SPREAD_METRICS = ("voice_to_voice_ms", "barge_in_stop_ms", "barge_in_voice_stop_ms")


def repeat_summary(values: dict[str, list[float]], seconds: float, sessions_refused: int) -> dict[str, Any]:
    """What is kept of one repeat: its own statistics of the metrics whose spread is shown, and
    how many of its sessions were refused at admission (each repeat is an occasion of its own)."""
    kept: dict[str, Any] = {"seconds": seconds, "sessions_refused": sessions_refused}
    for metric in SPREAD_METRICS:
        if values.get(metric):
            kept[metric] = summarize(values[metric])
    return kept


def spread_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line per run measured more than once: the pooled p50 and p95 and, in brackets, the
    lowest and highest of the repeats' own."""
    lines = []
    for run in runs:
        repeats = run.get("repeats") or []
        if len(repeats) < 2:
            continue
        cells = []
        for metric in SPREAD_METRICS:
            pooled = run["summary_ms"].get(metric)
            own = [repeat[metric] for repeat in repeats if metric in repeat]
            if pooled is None or not own:
                continue
            for stat in ("p50", "p95"):
                low, high = min(s[stat] for s in own), max(s[stat] for s in own)
                cells.append(f"{metric.removesuffix('_ms')} {stat} {pooled[stat]:.0f} ({low:.0f}-{high:.0f})")
        lines.append(f"{run['target']} ×{run['sessions']} over {len(repeats)} repeats: " + ", ".join(cells))
    return lines
