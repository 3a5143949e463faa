"""The rules for work done ahead on a guess: a pause's transcript at the early mark (measured in
docs/benchmarks.md, "A pause starts its transcript early whenever the server is idle"), drafts
of the transcript while the speaker talks ("Drafts of the transcript while the speaker talks"),
and the LLM reading a draft's prompt ("The LLM reads a lone speaker's drafts while they talk")."""

from __future__ import annotations

from cosyagent.engines.scheduling import DeadlineScheduler
from cosyagent.runtime.llm_slots import LLMSlots


def room_to_speculate(sessions: int, scheduler: DeadlineScheduler, llm_slots: LLMSlots | None) -> bool:
    """Whether a pause may start its transcript at the early mark (``turns.EARLY_SPECULATE_AFTER_MS``):
    when its session is alone (a wasted transcript costs only itself), or when no engine job runs
    or waits and the embedded LLM decodes nothing (then it delays nobody, and one that turns out
    wasted is cancelled as soon as the speaker goes on)."""
    return sessions <= 1 or room_to_draft(scheduler, llm_slots)


def room_to_draft(scheduler: DeadlineScheduler, llm_slots: LLMSlots | None) -> bool:
    """Whether a draft transcript may start now: no engine job runs or waits (drafts under way
    aside: they give way) and the embedded LLM decodes nothing. A lone session's reply being
    synthesized counts too: a draft then would only slow the reply's next clause."""
    return scheduler.idle and not (llm_slots is not None and llm_slots.decoding)


def room_to_read_ahead(sessions: int) -> bool:
    """Whether the embedded LLM may read a draft's prompt while its speaker talks: only when their
    session is alone on the server. Measured: one session's replies ~35 ms sooner; four sessions'
    ~70 ms later on the mean (each read ~10 prompt tokens, for every draft of every speaker, is
    LLM work the cores did not have)."""
    return sessions <= 1
