"""The bench's report: its summary table, the ratios to the stock pipecat baseline, issue #13's
verdicts (each target met or missed by how much) and what is printed at the end of a run. Shared
by ``benchmarks.bench`` and ``benchmarks.merge``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.records import ROOT
from benchmarks.repeats import spread_lines

# Issue #13's targets, drawn on the sessions plot.
TARGETS_MS = {
    "800 ms (1 session p50)": 800.0,
    "1100 ms (1 session p95)": 1100.0,
    "1500 ms (4 sessions p95)": 1500.0,
    "3000 ms (8 sessions p95)": 3000.0,
}
COLUMNS = (  # (metric, statistic, header) of the summary table
    ("voice_to_voice_ms", "p50", "v2v p50"),
    ("voice_to_voice_ms", "p95", "v2v p95"),
    ("end_of_turn_ms", "p50", "turn"),
    ("asr_ms", "p50", "asr"),
    ("llm_first_token_ms", "p50", "llm"),
    ("first_clause_ms", "p50", "clause"),
    ("tts_first_audio_ms", "p50", "tts"),
    ("reply_stall_ms", "p95", "stall p95"),
    ("barge_in_stop_ms", "p50", "stop p50"),
    ("barge_in_stop_ms", "p95", "stop p95"),
    ("barge_in_voice_stop_ms", "p95", "voice p95"),
)


def cell(summary: dict[str, dict[str, float]], metric: str, stat: str) -> str:
    value = summary.get(metric, {}).get(stat)
    return "-" if value is None else f"{value:.0f}"


def table(runs: list[dict[str, Any]]) -> str:
    header = f"{'target':<10} {'N':>2} " + " ".join(f"{h:>8}" for _, _, h in COLUMNS)
    header += f" {'turns':>7} {'cpu':>5} {'MiB':>6}"
    lines = [header, "-" * len(header)]
    for run in runs:
        cells = " ".join(f"{cell(run['summary_ms'], m, s):>8}" for m, s, _ in COLUMNS)
        turns = f"{run['turns_ok']}/{run['turns_ok'] + run['turns_failed']}"
        cpu = run["server_cpu"].get("server_cores")
        peak = run["server_memory"].get("peak_mib")
        lines.append(
            f"{run['target']:<10} {run['sessions']:>2} {cells} {turns:>7} "
            f"{'-' if cpu is None else f'{cpu:.2f}':>5} {'-' if peak is None else f'{peak:.0f}':>6}"
        )
    return "\n".join(lines)


def ratios(runs: list[dict[str, Any]], ours: str = "websocket") -> dict[str, dict[str, float]]:
    """cosyagent / baseline for each metric's p50 and p95, per session count (below 1: we are faster)."""
    out: dict[str, dict[str, float]] = {}
    for run in (r for r in runs if r["target"] == ours):
        base = next((r for r in runs if r["target"] == "baseline" and r["sessions"] == run["sessions"]), None)
        if base is None:
            continue
        cells: dict[str, float] = {}
        for metric, stats in run["summary_ms"].items():
            other = base["summary_ms"].get(metric)
            for stat in ("p50", "p95"):
                if other and other[stat] > 0:
                    cells[f"{metric}.{stat}"] = round(stats[stat] / other[stat], 2)
        out[f"{ours}/baseline ×{run['sessions']}"] = cells
    return out


def verdicts(runs: list[dict[str, Any]], ratio_table: dict[str, dict[str, float]]) -> list[str]:
    """Issue #13's targets, each met or missed by how much (a target whose run is absent: not measured)."""

    def find(sessions: int, target: str = "websocket") -> dict[str, Any] | None:
        return next((r for r in runs if r["target"] == target and r["sessions"] == sessions), None)

    lines: list[str] = []

    def check(name: str, run: dict[str, Any] | None, metric: str, which: str, limit: float) -> None:
        value = None if run is None else run["summary_ms"].get(metric, {}).get(which)
        if value is None:
            lines.append(f"{name}: not measured")
        elif value <= limit:
            lines.append(f"{name}: {value:.0f} ms <= {limit:.0f}: met")
        else:
            lines.append(f"{name}: {value:.0f} ms > {limit:.0f}: missed by {value - limit:.0f} ms")

    single, four = find(1), find(4)
    check("single session voice-to-voice p50", single, "voice_to_voice_ms", "p50", 800)
    check("single session voice-to-voice p95", single, "voice_to_voice_ms", "p95", 1100)
    if four is not None and "turns_ok" in four:
        answered = f"{four['turns_ok']} of {four['turns_ok'] + four['turns_failed']}"
        lines.append(f"4 sessions, every turn answered: {answered}: {'met' if not four['turns_failed'] else 'missed'}")
    check("4 sessions voice-to-voice p95", four, "voice_to_voice_ms", "p95", 1500)
    check("4 sessions barge-in stop p95", four, "barge_in_stop_ms", "p95", 250)
    check("4 sessions barge-in voice stop p95 (as the caller hears it)", four, "barge_in_voice_stop_ms", "p95", 250)
    for target in ("websocket", "webrtc"):
        run = find(8, target)
        if run is not None and run.get("admission") == "shipped":
            lines.append(_eight_as_shipped(target, run))
        elif run is not None or target == "websocket":
            check(
                f"8 sessions voice-to-voice p95 over {target} (every session admitted)",
                run,
                "voice_to_voice_ms",
                "p95",
                3000,
            )
    for sessions in (1, 2, 4):
        ratio = ratio_table.get(f"websocket/baseline ×{sessions}", {}).get("voice_to_voice_ms.p50")
        name = f"{sessions} session(s) voice-to-voice p50 <= 0.5x the baseline"
        if ratio is None:
            lines.append(f"{name}: not measured")
        else:
            lines.append(f"{name}: ratio {ratio:.2f}: {'met' if ratio <= 0.5 else 'missed'}")
    return lines


def _eight_as_shipped(target: str, run: dict[str, Any]) -> str:
    """Issue #13's eight-session target with the server's own admission: every session either
    answered with p95 <= 3 s and no turn over 5 s, or refused up front with a clear error. With
    ``--repeat`` each repeat is eight people at once again: judged on its own p95 and refusals."""
    pooled_v2v = run["summary_ms"].get("voice_to_voice_ms")
    occasions = run.get("repeats") or [
        {"sessions_refused": run.get("sessions_refused", 0), "voice_to_voice_ms": pooled_v2v}
    ]
    refused = [occasion["sessions_refused"] for occasion in occasions]
    admitted = [run["sessions"] - count for count in refused]
    p95s = [occasion["voice_to_voice_ms"]["p95"] for occasion in occasions if occasion.get("voice_to_voice_ms")]
    longest = pooled_v2v.get("max") if pooled_v2v else None
    told = f", told within {run['refused_after_ms_max']:.0f} ms" if any(refused) else ""
    codes = f" ({', '.join(run.get('refusal_codes', []))}{told})" if any(refused) else ""
    times = f", {len(occasions)} times" if len(occasions) > 1 else ""
    head = (
        f"8 sessions over {target}, the server's own admission{times}: {_and(admitted)} admitted, "
        f"{_and(refused)} refused up front{codes}"
    )
    if not p95s or longest is None:
        return f"{head}: nothing answered: missed"
    met = len(p95s) == len(occasions) and max(p95s) <= 3000 and longest <= 5000 and not run.get("turns_failed")
    failed = f", {run['turns_failed']} turn(s) failed" if run.get("turns_failed") else ""
    return (
        f"{head}; p95 {_and(p95s)} ms (<= 3000), longest {longest:.0f} ms (<= 5000){failed}: "
        f"{'met' if met else 'missed'}"
    )


def _and(values: list[int] | list[float]) -> str:
    """``[7]`` -> "7", ``[7, 6]`` -> "7 and 6", ``[1972.4, 2500, 3692]`` -> "1972, 2500 and 3692"."""
    words = [f"{value:.0f}" for value in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def judge(report: dict[str, Any]) -> None:
    """(Re)compute the report's ratios and verdicts from its runs."""
    report["ratios"] = ratios(report["runs"])
    report["verdicts"] = verdicts(report["runs"], report["ratios"])


def speed_lines(report: dict[str, Any]) -> list[str]:
    """The machine's speed when each run was measured (benchmarks/machine_speed.py): one line, or
    one per report a merged report was made from. Reports written before 2026-12-06 have none."""
    sources = report.get("merged_from") or [{"file": None, "machine": report["machine"]}]
    lines = []
    for source in sources:
        if speed := source["machine"].get("speed"):
            where = f" ({source['file']})" if source["file"] else ""
            lines.append(f"the machine's speed{where}: {speed['moonshine_ms']} ms ({speed['work']}; lower is faster)")
    return lines


def print_report(report: dict[str, Any], path: Path, plots: bool) -> None:
    """The table, ratios, verdicts and errors on stdout; the plots next to the JSON at ``path``."""
    reports, ratio_table, verdict_lines = report["runs"], report["ratios"], report["verdicts"]
    print("\n" + table(reports))
    for name, cells in ratio_table.items():
        shown = {k: v for k, v in cells.items() if k.endswith(".p50")}
        print(f"{name}: " + ", ".join(f"{k.removesuffix('_ms.p50')} {v:.2f}" for k, v in shown.items()))
    print("\n".join([*spread_lines(reports), *verdict_lines]))
    for run in reports:
        for error in run["errors"]:
            print(f"error ({run['target']} ×{run['sessions']}): {error}")
        for note in run.get("notes", []):  # reports written before notes existed have none
            print(f"note ({run['target']} ×{run['sessions']}): {note}")
    for line in speed_lines(report):
        print(line)
    print(f"\nwrote {_shown(path)}")
    if plots:
        from benchmarks.plots import draw

        for picture in draw(report, path.with_suffix("")):
            print(f"wrote {_shown(picture)}")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
