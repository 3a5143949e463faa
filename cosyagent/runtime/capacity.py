"""How many conversations this machine can serve at once within the latency budget.

At startup (after the engines' warm-up), and again when idle
(:mod:`cosyagent.runtime.capacity_meter`), :func:`measure_turn_costs` times what one
conversational turn costs here, with the loaded engines: the TTS speaks a short two-sentence
reply (its first sentence is the first clause; the whole gives the real-time factor), the ASR
transcribes that reply, and the embedded LLM answers a question (first token, tokens per
second). An external LLM (``llm.engine: openai``) is not timed: its cost is not ours.

:func:`estimate_capacity` turns those costs into a session count, a pure function:

- The worst case is that every session ends its turn at the same moment. The engines share
  the same cores and serve one job at a time, so each session's work comes after the work of
  those before it. One turn costs ``turn_s = asr_s + llm_reply_s + tts_first_clause_s``, where
  ``llm_reply_s = llm_first_token_s + reply_tokens / llm_tokens_per_s`` (0 for an external
  LLM). Session ``n`` hears its first audio at

      end_of_turn_s + max(0, n * (asr_s + turn_model_s) - hidden_s)
                    + n * (llm_s + tts_first_clause_s) + decode_s

  after the end of its speech: the transcripts (and with ``semantic_vad`` the end-of-turn
  model's verdicts) start at the pause, so the silence wait hides ``hidden_s = end_of_turn_s -
  SPECULATE_AFTER_MS`` of them; ``llm_s`` is the LLM's part one
  session waits for. The embedded server that answers one request at a time makes the next
  session wait for a whole reply (``llm_s = llm_reply_s``, ``decode_s = 0``); one that decodes
  replies together (the native llama-server, ``llm.parallel`` > 1) only for each prompt's
  reading (``llm_s = llm_first_token_s``), the first clauses being decoded together once
  (``decode_s = reply_tokens / llm_tokens_per_s``, ``reply_tokens`` the first clause's). The
  ``latency_bound`` is the largest ``n`` whose first audio fits ``budget_s``.
- While those replies play, synthesis has to keep up with playback: each speaking session
  needs ``tts_rtf`` of the machine, so ``streaming_bound = floor(1 / tts_rtf)``.
- ``capacity = max(1, min(latency_bound, streaming_bound))``: never below one (a server that
  refuses everyone serves no one; a warning says when one turn alone exceeds the budget).

Measured on the 2-core Xeon (2026-12-02): asr 0.16 s, Smart Turn 0.08 s, LLM first token
0.2 s and 0.48 s to the first clause, first clause 0.085 s give 4 sessions; sessions ending
their turns at once were measured at p95 1.9-2.9 s (four), 3.2 s (five) and 9 s (eight).
Still conservative for engines that batch on a GPU (CosyVoice with ``max_concurrency``,
vLLM): there, set ``server.capacity``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from cosyagent.audio.pcm import resample
from cosyagent.engines.base import ChatLLM, SpeechRecognizer, SpeechSynthesizer, TurnEndPredictor
from cosyagent.pipeline.turns import SPECULATE_AFTER_MS

logger = logging.getLogger(__name__)

# What a turn is made of when it is timed: a short first clause, then a short second sentence
# (a typical voice reply is one or two short sentences), and a question for the LLM.
REPLY_TEXT = "Sure, I can help. It looks sunny tomorrow."
QUESTION = "What is a good name for a puppy?"


def llm_question(attempt: int) -> str:
    """What the LLM answers in the ``attempt``-th measurement (1 at startup). Numbered, because
    llama.cpp's server keeps each slot's last prompt cached: asked the same words again, it
    would skip reading them (a first token ~25 ms instead of ~120 on the EPYC, and a capacity
    of 8-10 instead of 7), where a real turn's new words are always read."""
    return f"Question {attempt}: {QUESTION}"


LLM_SAMPLE_TOKENS = 16  # tokens generated to time the LLM (its speed, not a whole reply)
TYPICAL_REPLY_TOKENS = 30  # ~20 words: one or two short sentences, what a voice reply is
FIRST_CLAUSE_TOKENS = 6  # the first clause (up to 3 words) and its punctuation
MAX_SESSIONS = 1 << 16  # the latency bound of engines that cost (almost) nothing


@dataclass(frozen=True)
class TurnCosts:
    """What one turn costs on this machine, in seconds (``tts_rtf``: seconds per second of audio)."""

    asr_s: float
    tts_first_clause_s: float
    tts_rtf: float
    llm_first_token_s: float | None = None  # None: the LLM is not ours (external), not counted
    llm_tokens_per_s: float | None = None
    turn_model_s: float = 0.0  # semantic_vad's end-of-turn model on the utterance (0: not used)

    def __post_init__(self) -> None:
        if min(self.asr_s, self.tts_first_clause_s, self.turn_model_s) < 0 or self.tts_rtf <= 0:
            raise ValueError(f"turn costs must be non-negative and the TTS real-time factor positive: {self}")
        if (self.llm_first_token_s is None) != (self.llm_tokens_per_s is None):
            raise ValueError("llm_first_token_s and llm_tokens_per_s come together (both None: an external LLM)")
        if self.llm_tokens_per_s is not None and (self.llm_tokens_per_s <= 0 or (self.llm_first_token_s or 0) < 0):
            raise ValueError(f"LLM costs must be non-negative and its speed positive: {self}")

    def llm_reply_s(self, reply_tokens: int) -> float:
        """The LLM's time for a whole reply of ``reply_tokens`` (0 for an external LLM)."""
        if self.llm_first_token_s is None or self.llm_tokens_per_s is None:
            return 0.0
        return self.llm_first_token_s + reply_tokens / self.llm_tokens_per_s


@dataclass(frozen=True)
class CapacityEstimate:
    """The result of :func:`estimate_capacity`, with the numbers that made it."""

    sessions: int
    costs: TurnCosts
    turn_s: float  # engine time one turn costs (served one after another)
    latency_bound: int  # sessions whose first audio fits the budget
    streaming_bound: int  # sessions whose replies the TTS keeps up with at once
    budget_s: float
    end_of_turn_s: float
    reply_tokens: int

    @property
    def fits_budget(self) -> bool:
        """Whether even one session's turn fits the budget."""
        return self.latency_bound >= 1

    def log(self) -> None:
        """Say at startup what was measured; warn when one turn alone exceeds the budget."""
        logger.info(
            "capacity: %d sessions (one turn %.2f s: %s; latency bound %d, streaming bound %d)",
            self.sessions,
            self.turn_s,
            {stage: round(s, 3) for stage, s in self.stage_seconds().items()},
            self.latency_bound,
            self.streaming_bound,
        )
        if not self.fits_budget:
            logger.warning(
                "one turn alone (%.2f s of engine time) exceeds server.latency_budget_ms %d after the %d ms "
                "end-of-turn wait: admitting one session anyway",
                self.turn_s,
                round(self.budget_s * 1000),
                round(self.end_of_turn_s * 1000),
            )

    def stage_seconds(self) -> dict[str, float]:
        """The per-turn costs by stage, as ``/metrics`` shows them."""
        stages = {"asr": self.costs.asr_s, "tts_first_clause": self.costs.tts_first_clause_s, "turn": self.turn_s}
        if self.costs.turn_model_s:
            stages["turn_model"] = self.costs.turn_model_s
        if self.costs.llm_first_token_s is not None:
            stages["llm_first_token"] = self.costs.llm_first_token_s
            stages["llm_reply"] = self.costs.llm_reply_s(self.reply_tokens)
        return stages


def estimate_capacity(
    costs: TurnCosts,
    *,
    budget_s: float,
    end_of_turn_s: float,
    reply_tokens: int = TYPICAL_REPLY_TOKENS,
    parallel_llm: bool = False,
) -> CapacityEstimate:
    """Sessions that can take a turn at the same time within ``budget_s`` (see the module's
    formula); ``parallel_llm``: the embedded LLM decodes replies together."""
    if budget_s <= 0 or end_of_turn_s < 0 or reply_tokens < 0:
        raise ValueError("budget_s must be positive, end_of_turn_s and reply_tokens non-negative")
    llm_reply_s = costs.llm_reply_s(reply_tokens)
    turn_s = costs.asr_s + llm_reply_s + costs.tts_first_clause_s
    llm_s = (costs.llm_first_token_s or 0.0) if parallel_llm else llm_reply_s
    decode_s = llm_reply_s - llm_s
    hidden_s = max(0.0, end_of_turn_s - SPECULATE_AFTER_MS / 1000)

    in_the_wait_s = costs.asr_s + costs.turn_model_s  # each pause's jobs, started inside the silence wait

    def first_audio_s(n: int) -> float:
        waited = max(0.0, n * in_the_wait_s - hidden_s)
        return end_of_turn_s + waited + n * (llm_s + costs.tts_first_clause_s) + decode_s

    latency_bound = 0
    while latency_bound < MAX_SESSIONS and first_audio_s(latency_bound + 1) <= budget_s + 1e-9:
        latency_bound += 1
    streaming_bound = math.floor(1.0 / costs.tts_rtf + 1e-9)
    sessions = max(1, min(latency_bound, streaming_bound))
    return CapacityEstimate(
        sessions, costs, turn_s, latency_bound, streaming_bound, budget_s, end_of_turn_s, reply_tokens
    )


@dataclass(frozen=True)
class AdmissionLimit:
    """How many sessions are admitted now, and what to say to the one past it."""

    sessions: int
    code: str  # the refusal's error code: server_at_capacity or session_limit
    message: str


def admission_limit(capacity: int | str, estimate: CapacityEstimate | None, max_sessions: int) -> AdmissionLimit:
    """The limit from ``server.capacity`` (``"auto"``: the estimate) capped by ``server.max_sessions``.

    Without an estimate (the engines not measured yet), ``auto`` admits up to ``max_sessions``.
    """
    session_limit = AdmissionLimit(
        max_sessions, "session_limit", f"the server is at its limit of {max_sessions} sessions"
    )
    if isinstance(capacity, int):
        why = "set by server.capacity"
        sessions = capacity
    elif estimate is not None:
        why = (
            f"measured: one turn costs {estimate.turn_s:.2f} s of engine time, "
            f"latency budget {estimate.budget_s * 1000:.0f} ms"
        )
        sessions = estimate.sessions
    else:
        return session_limit
    if sessions >= max_sessions:
        return session_limit
    noun = "conversation" if sessions == 1 else "conversations"
    return AdmissionLimit(sessions, "server_at_capacity", f"the server is at its capacity of {sessions} {noun} ({why})")


async def measure_turn_costs(
    asr: SpeechRecognizer,
    tts: SpeechSynthesizer,
    voice: str,
    llm: ChatLLM | None,
    instructions: str,
    *,
    question: str,
    patience_s: float = 3.0,
    turn_end: TurnEndPredictor | None = None,
) -> TurnCosts:
    """Time one turn's work on the loaded engines (``llm``: the embedded LLM, None if external);
    ``question``: :func:`llm_question` of this measurement (no default: a question asked before
    would be read from llama.cpp's prompt cache and time too cheap).

    Each engine runs on its own worker (the LLM in its server): nothing blocks the event loop.
    On a quiet 2-core machine it takes about a second. A stage that has already run past
    ``patience_s`` (the latency budget: one such turn means a capacity of one anyway) is cut
    short: the TTS's second sentence is skipped, the LLM's sample stops at the tokens it has.
    """
    began = time.perf_counter()
    first_clause_s: float | None = None
    chunks: list[np.ndarray] = []
    speech = tts.synthesize(REPLY_TEXT, voice=voice)
    try:
        async for chunk in speech:
            if first_clause_s is None:
                first_clause_s = time.perf_counter() - began
            chunks.append(chunk)
            if time.perf_counter() - began > patience_s:
                break
    finally:
        await speech.aclose()  # type: ignore[attr-defined]  # an async generator in every engine
    tts_s = time.perf_counter() - began
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if first_clause_s is None or audio.size == 0:
        raise RuntimeError(f"the TTS made no audio for {REPLY_TEXT!r}: cannot measure its cost")
    rtf = tts_s / (audio.size / tts.sample_rate)
    clip = resample(audio, tts.sample_rate, asr.sample_rate)
    began = time.perf_counter()
    # language="en": the clip is our own English, and a language check may take a synthetic voice
    # (Kokoro's Japanese-accented jf_alpha) for another language and refuse it, failing startup.
    await asr.transcribe(clip, language="en")
    asr_s = time.perf_counter() - began
    turn_model_s = 0.0
    if turn_end is not None:
        began = time.perf_counter()
        await turn_end.probability(clip)
        turn_model_s = time.perf_counter() - began
    if llm is None:
        return TurnCosts(asr_s=asr_s, tts_first_clause_s=first_clause_s, tts_rtf=rtf, turn_model_s=turn_model_s)
    first_token_s, tokens_per_s = await _time_llm(llm, instructions, question, patience_s)
    return TurnCosts(asr_s, first_clause_s, rtf, first_token_s, tokens_per_s, turn_model_s)


async def _time_llm(llm: ChatLLM, instructions: str, question: str, patience_s: float) -> tuple[float, float]:
    """(first token seconds, tokens per second); each streamed delta counts as one token.

    Past ``patience_s`` it stops with what it has: without a first token by then, both numbers
    are bounds (the first token takes at least that long, fewer than one token came in it).
    """
    messages = [{"role": "system", "content": instructions}, {"role": "user", "content": question}]
    began = time.perf_counter()
    deadline = began + patience_s
    first: float | None = None
    tokens = 0
    reply = aiter(llm.stream_chat(messages, max_tokens=LLM_SAMPLE_TOKENS, temperature=0.0))
    try:
        while True:
            try:
                await asyncio.wait_for(anext(reply), timeout=max(0.0, deadline - time.perf_counter()))
            except (StopAsyncIteration, TimeoutError):
                break
            tokens += 1
            if first is None:
                first = time.perf_counter() - began
    finally:
        await reply.aclose()  # type: ignore[attr-defined]  # closing aborts the generation
    total = time.perf_counter() - began
    if first is None:
        if total < patience_s:
            raise RuntimeError("the LLM answered nothing: cannot measure its cost")
        return total, 1.0 / total
    generating = total - first
    per_s = max(tokens - 1, 1) / generating if generating > 0 else tokens / total
    return first, per_s
