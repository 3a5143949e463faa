"""A short run of benchmarks/soak.py: text sessions opened and closed (some vanishing mid-reply),
then sessions speaking a real question on a real in-process server;
afterwards no session is counted (by the runtime and by /metrics) and no task, thread or file
descriptor is left beyond the warmed-up baseline (waited for at most a minute: a closing
socket takes a moment, a leak never goes). RSS is the benchmark's business: this CPU is shared."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.soak import parse_args, run, table


async def test_churn_returns_to_the_baseline(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"  # SmolLM2: the lightest LLM, so that a busy CPU still turns sessions over
    sections = {
        "server": {"data_dir": str(tmp_path / "data")},
        "llm": {"embedded_model": "smollm2"},
        "realtime": {"max_output_tokens": 12},  # short spoken replies: the driver listens to each to its end
    }
    config.write_text(yaml.safe_dump(sections), encoding="utf-8")
    arguments = ["--sessions", "2", "--churn", "4", "--minutes", "0.1", "--turns", "1", "--barge-ins", "0"]
    args = parse_args([*arguments, "--max-tokens", "8", "--vanish-every", "2", "--config", str(config)])
    result = await run(args)
    print(table(result, args))
    assert not result.errors, result.errors
    assert result.served >= 4 + 2 and result.vanished == 2
    assert len(result.voice_to_voice_ms) >= 2 and len(result.text_first_audio_ms) >= 2  # both kinds timed
    before, churned, middle, after = (result.resources[w] for w in ("before", "after churn", "middle", "after"))
    for quiet in (churned, middle, after):
        assert quiet.active_sessions == 0 and quiet.metrics_sessions == 0, result.resources
    assert after.tasks <= before.tasks, result.resources
    assert after.threads <= before.threads, result.resources
    # The pytest process also hosts other tests' servers and clients (keep-alive connections come and
    # go): a spare descriptor or two is theirs; a leak per session would be one per session served.
    assert after.fds <= before.fds + 2, result.resources
