"""A short run of benchmarks/soak.py: sessions opened and closed (some vanishing mid-reply) on a
real in-process server; afterwards no session is counted and no task, thread or file
descriptor is left beyond the warmed-up baseline (waited for at most a minute: a closing
socket takes a moment, a leak never goes)."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.soak import parse_args, run, table


async def test_churn_returns_to_the_baseline(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"  # SmolLM2: the lightest LLM, so that a busy CPU still turns sessions over
    sections = {"server": {"data_dir": str(tmp_path / "data")}, "llm": {"embedded_model": "smollm2"}}
    config.write_text(yaml.safe_dump(sections), encoding="utf-8")
    arguments = ["--sessions", "2", "--minutes", "1", "--max-tokens", "8", "--vanish-every", "2"]
    args = parse_args([*arguments, "--config", str(config)])
    result = await run(args)
    print(table(result, args.sessions, args.minutes * 60))
    assert not result.errors, result.errors
    assert result.served >= 4 and result.vanished >= 1
    before, middle, after = (result.resources[when] for when in ("before", "middle", "after"))
    assert middle.active_sessions == 0 and after.active_sessions == 0
    assert after.tasks <= before.tasks, result.resources
    assert after.threads <= before.threads, result.resources
    # The pytest process also hosts other tests' servers and clients (keep-alive connections come and
    # go): a spare descriptor or two is theirs; a leak per session would be one per session served.
    assert after.fds <= before.fds + 2, result.resources
