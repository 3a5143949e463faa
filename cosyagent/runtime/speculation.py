"""The rule for when a pause starts its speculative transcript at the early mark (measured in
docs/benchmarks.md, "A pause starts its transcript early whenever the server is idle")."""

from __future__ import annotations

from cosyagent.engines.scheduling import DeadlineScheduler
from cosyagent.runtime.llm_slots import LLMSlots


def room_to_speculate(sessions: int, scheduler: DeadlineScheduler, llm_slots: LLMSlots | None) -> bool:
    """Whether a pause may start its transcript at the early mark (``turns.EARLY_SPECULATE_AFTER_MS``):
    when its session is alone (a wasted transcript costs only itself), or when no engine job runs
    or waits and the embedded LLM decodes nothing (then it delays nobody, and one that turns out
    wasted is cancelled as soon as the speaker goes on)."""
    if sessions <= 1:
        return True
    return scheduler.idle and not (llm_slots is not None and llm_slots.decoding)
