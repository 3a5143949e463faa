"""The three pictures of a ``cosyagent bench`` run, drawn from its JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# Stages of one turn, stacked in order; the last one is whatever remains of voice-to-voice.
STAGES = (
    ("end_of_turn_ms", "end of turn"),
    ("asr_ms", "ASR"),
    ("llm_first_token_ms", "LLM first token"),
    ("first_clause_ms", "first clause"),
    ("tts_first_audio_ms", "TTS first audio"),
)
COLORS = {"websocket": "tab:blue", "webrtc": "tab:green", "baseline": "tab:red"}


def draw(report: dict[str, Any], stem: Path) -> list[Path]:
    """Write ``STEM-cdf.png``, ``STEM-stages.png`` and ``STEM-sessions.png``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    runs = report["runs"]
    paths = [stem.with_name(f"{stem.name}-{kind}.png") for kind in ("cdf", "stages", "sessions")]
    _cdf(runs, paths[0])
    _stages(runs, paths[1])
    _sessions(runs, report.get("targets_ms", {}), paths[2])
    return paths


def _label(run: dict[str, Any]) -> str:
    return f"{run['target']} ×{run['sessions']}"


def _cdf(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    counts = sorted({run["sessions"] for run in runs})
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.6), sharey=True, squeeze=False)
    for ax, count in zip(axes[0], counts, strict=True):
        for run in (r for r in runs if r["sessions"] == count):
            values = np.sort(np.asarray(run["values_ms"].get("voice_to_voice_ms", []), dtype=float))
            if values.size:
                ax.step(
                    values,
                    np.arange(1, values.size + 1) / values.size,
                    where="post",
                    label=run["target"],
                    color=COLORS.get(run["target"]),
                )
        ax.set_title(f"{count} session{'s' if count > 1 else ''}")
        ax.set_xlabel("voice-to-voice (ms)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0][0].set_ylabel("fraction of turns")
    fig.suptitle("Voice-to-voice latency, CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stage_medians(run: dict[str, Any]) -> list[float]:
    """Median of each stage as an increment (the reply stages are cumulative from the reply's
    start), then the rest of the median voice-to-voice: delivery to the client."""
    medians = {key: float(np.median(run["values_ms"][key])) if run["values_ms"].get(key) else 0.0 for key, _ in STAGES}
    increments = [
        medians["end_of_turn_ms"],
        medians["asr_ms"],
        medians["llm_first_token_ms"],
        max(0.0, medians["first_clause_ms"] - medians["llm_first_token_ms"]),
        max(0.0, medians["tts_first_audio_ms"] - max(medians["first_clause_ms"], medians["llm_first_token_ms"])),
    ]
    v2v = run["values_ms"].get("voice_to_voice_ms") or [0.0]
    return [*increments, max(0.0, float(np.median(v2v)) - sum(increments))]


def _stages(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    labels = [_label(run) for run in runs]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(runs) + 2.5), 4.2))
    bottoms = np.zeros(len(runs))
    names = [name for _, name in STAGES] + ["delivery / rest"]
    columns = np.asarray([stage_medians(run) for run in runs]).T
    for name, column in zip(names, columns, strict=True):
        ax.bar(labels, column, bottom=bottoms, label=name)
        bottoms += column
    ax.set_ylabel("median ms")
    ax.set_title("Where a turn's voice-to-voice time goes (medians)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sessions(runs: list[dict[str, Any]], targets_ms: dict[str, float], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for target in dict.fromkeys(run["target"] for run in runs):
        mine = sorted((r for r in runs if r["target"] == target), key=lambda r: r["sessions"])
        points = [(r["sessions"], r["summary_ms"].get("voice_to_voice_ms")) for r in mine]
        points = [(n, s) for n, s in points if s]
        if not points:
            continue
        xs = [n for n, _ in points]
        color = COLORS.get(target)
        ax.plot(xs, [s["p50"] for _, s in points], marker="o", color=color, label=f"{target} p50")
        ax.plot(xs, [s["p95"] for _, s in points], marker="s", linestyle="--", color=color, label=f"{target} p95")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # one session's ~1.5 s and eight sessions' ~50 s on one readable axis
    counts = sorted({run["sessions"] for run in runs})
    ax.set_xticks(counts, [str(n) for n in counts])
    for name, value in targets_ms.items():  # after the scales: the label sits at the left edge
        ax.axhline(value, color="grey", linewidth=0.8, linestyle=":")
        ax.annotate(name, (ax.get_xlim()[0], value), fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("voice-to-voice (ms, log scale)")
    ax.set_title("Voice-to-voice against concurrent sessions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
