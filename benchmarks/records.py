"""What every benchmark driver records, so cosyagent (WebSocket, WebRTC) and the stock pipecat
baseline are measured by the same rulers.

A driver is ``async def run_session(url, index, clips, plan) -> SessionRecord``: one conversation
of ``plan.turns`` utterances (each waits for the whole reply to play out), then
``plan.barge_ins`` trials (a second utterance starts ``BARGE_IN_AFTER_S`` into a reply).

All times are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on the
machine, so a server process may stamp events that the client then compares with its own).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from cosyagent.talk import RATE, Clip, TurnResult, speech_segments

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CLIPS = ("en_lecture_60s.wav", "en_news_movement_8k.wav")
BARGE_IN_AFTER_S = 0.5  # start the interrupting utterance this long after the reply's first audio
PLAYBACK_MARGIN_S = 0.5  # the user waits for the reply to finish playing, plus this

# Per turn. Each value is milliseconds or None when the driver could not see it.
TURN_METRICS = {
    "voice_to_voice_ms": "voice-to-voice: end of speech -> first reply audio at the client",
    "end_of_turn_ms": "end of speech -> the server ends the turn",
    "asr_ms": "end of turn -> final transcript",
    "llm_first_token_ms": "reply start -> LLM first token",
    "first_clause_ms": "reply start -> first clause for TTS",
    "tts_first_audio_ms": "reply start -> TTS first audio",
    # WebSocket only: read from the audio deltas; the WebRTC and baseline drivers record None.
    "reply_stall_ms": "reply under way: how long its audio ran out before more came, played from its first audio",
}
# Per barge-in trial.
BARGE_METRICS = {
    "barge_in_stop_ms": "barge-in: interrupting speech begins -> the reply is cut off (WebSocket: its response.done; "
    "WebRTC: its last voiced frame arrives)",
    # What a caller hears: a WebSocket client stops playing the reply on speech_started (the Realtime
    # API's contract; the server sends no reply audio after it), WebRTC's voice stops at the track.
    "barge_in_voice_stop_ms": "barge-in: interrupting speech begins -> the reply's voice stops for the caller",
    "voice_to_voice_after_barge_in_ms": "barge-in: voice-to-voice of the interrupting turn",
}
# The error codes of a session refused at admission (server.capacity, server.max_sessions,
# webrtc.max_calls): with ``--admission shipped`` such a session is counted as refused up front,
# which issue #13's eight-session target allows, not as a failure.
ADMISSION_REFUSALS = ("server_at_capacity", "session_limit", "call_limit")
# A microphone chunk sent late only makes the latencies look worse (they are measured from when its
# audio was due): past MIC_LAG_NOTE_S a session notes it; past MIC_LAG_ERROR_S the bench's client,
# not the server, would be much of what was measured, and `cosyagent bench` counts it an error.
MIC_LAG_NOTE_S = 0.05
MIC_LAG_ERROR_S = 0.25
# A reply in "one or two short sentences" (the default instructions) is 2-7 s of speech. Past
# LONG_REPLY_S the LLM answered at length (the embedded one sometimes reads out a numbered list, up
# to its 80 tokens: ~20 s), and such a reply's decoding and synthesis load the other sessions' turns:
# a run that had some is noted, so that runs are compared with that in mind.
LONG_REPLY_S = 10.0
# The reply starts when the final transcript is handed to the LLM. The stages then add up:
# end_of_turn + asr + tts_first_audio (+ delivery to the client) = voice_to_voice.


@dataclass(frozen=True)
class Plan:
    turns: int = 10
    barge_ins: int = 3
    timeout_s: float = 60.0


@dataclass
class SessionRecord:
    """One conversation. ``turns`` rows carry ``clip``, ``ok`` and the TURN_METRICS keys (plus
    anything a driver wants to keep: transcripts, timelines); ``barge_ins`` rows carry
    ``reply_clip``, ``barge_in_clip``, the BARGE_METRICS keys, or ``skipped`` with the reason
    (e.g. the reply ended before the barge-in). ``refused``: the session was refused at
    admission (``code``, ``message``, ``after_ms`` from asking to being told); it has no turns.
    ``notes``: the bench's own lapses that cannot flatter the numbers (a late microphone);
    ``mic_lag_ms``: the latest a microphone chunk went out after it was due (None: not measured)."""

    index: int
    turns: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    mic_lag_ms: float | None = None

    def refuse(self, code: str, message: str, asked_at: float) -> None:
        """Record a refusal at admission, told at ``time.monotonic()`` now."""
        self.refused = {"code": code, "message": message, "after_ms": round((time.monotonic() - asked_at) * 1000, 1)}

    def mic_lagged(self, lag_s: float) -> None:
        """Record the microphone's worst lag (a note past MIC_LAG_NOTE_S)."""
        self.mic_lag_ms = round(lag_s * 1000, 1)
        if lag_s > MIC_LAG_NOTE_S:
            self.notes.append(f"the microphone fell {lag_s:.2f} s behind real time (the latencies include it)")


def utterances(min_s: float = 1.0, max_s: float = 8.0, pad_s: float = 0.2) -> list[Clip]:
    """Single utterances cut from the real recordings at pauses of 0.45 s or more, with up to
    ``pad_s`` of the recording's own room tone either side. ``Clip.speech_start_s`` and
    ``speech_end_s`` mark where the speech really is (by energy), which is what latencies are
    measured from."""
    clips: list[Clip] = []
    for name in CLIPS:
        audio, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
        samples = Clip.from_audio(audio.mean(axis=1), int(rate), name).samples
        segments = speech_segments(samples, RATE, min_speech_s=0.4)
        for i, (start, end) in enumerate(segments):
            if not min_s <= end - start <= max_s:
                continue
            before = segments[i - 1][1] if i else 0.0
            after = segments[i + 1][0] if i + 1 < len(segments) else samples.size / RATE
            cut_from = max(before + (start - before) / 2, start - pad_s, 0.0)
            cut_to = min(after - (after - end) / 2, end + pad_s, samples.size / RATE)
            piece = samples[int(cut_from * RATE) : int(cut_to * RATE)]
            clips.append(Clip(piece, start - cut_from, min(end - cut_from, piece.size / RATE), f"{name}@{start:.2f}"))
    return clips


# Finished questions in real speech: (file, where the question ends, what is asked). Each cut
# ends before the speaker's next word, so the turn is the question alone.
QUESTIONS = (
    ("en_dublin_q.wav", 2.7, "and says, how do I get to Dublin?"),
    ("en_wealth_tax_q.wav", 3.5, "Who's going to implement a 4% global wealth tax?"),
)


def questions() -> list[Clip]:
    """The finished questions of QUESTIONS, each as a turn of its own."""
    clips: list[Clip] = []
    for name, end_s, _ in QUESTIONS:
        audio, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
        clips.append(Clip.from_audio(audio.mean(axis=1)[: int(end_s * rate)], int(rate), f"{name}@0.00"))
    return clips


CLIP_SETS = {"utterances": utterances, "questions": questions}


def session_order(clips: list[Clip], index: int, plan: Plan) -> list[Clip]:
    """The clips session ``index`` speaks: turns first, then barge-in pairs (reply, interruption).
    Sessions start at different clips so concurrent sessions do not speak in unison."""
    return [clips[(index * 3 + i) % len(clips)] for i in range(plan.turns + 2 * plan.barge_ins)]


def cosyagent_turn(clip: Clip, result: TurnResult, ok: bool) -> dict[str, Any]:
    """What both cosyagent drivers (WebSocket, WebRTC) record of a turn; each adds its own fields.
    A failed or interrupted turn keeps its event timeline, to show where it went wrong."""
    timings = result.server_timings_ms
    row: dict[str, Any] = {
        "clip": clip.name,
        "speech_s": round(clip.speech_end_s - clip.speech_start_s, 2),
        "ok": ok,
        "voice_to_voice_ms": result.voice_to_voice_ms,
        "end_of_turn_ms": result.end_of_turn_ms,
        "asr_ms": result.asr_ms,
        "llm_first_token_ms": timings.get("llm_first_token"),
        "first_clause_ms": timings.get("first_clause"),
        "tts_first_audio_ms": timings.get("tts_first_audio"),
        "reply_stall_ms": None,  # the WebSocket driver, which sees the audio as deltas, sets it
        "status": result.status,
        "user_transcripts": result.user_transcripts,
        "reply_text": result.reply_text.strip()[:300],
        "first_clause": result.first_clause_text.strip(),
        "interrupted_responses": len(result.interrupted_responses),
    }
    if not ok or result.interrupted_responses:
        row["timeline"] = compact_timeline(result.timeline)
    return row


def compact_timeline(timeline: list[tuple[float, str]]) -> list[str]:
    """The timeline without runs of the same streaming event."""
    out: list[str] = []
    for at, kind in timeline:
        if out and kind.endswith(".delta") and out[-1].endswith(kind):
            continue
        out.append(f"{at:+.3f} {kind}")
    return out


def log_turn(logger: logging.Logger, index: int, record: SessionRecord) -> None:
    """One progress line for the session's latest turn."""
    turn = record.turns[-1] if record.turns else {}
    logger.info(
        "session %d turn %d: v2v %s ms, heard %r",
        index,
        len(record.turns),
        turn.get("voice_to_voice_ms"),
        " / ".join(turn.get("user_transcripts", [])),
    )
