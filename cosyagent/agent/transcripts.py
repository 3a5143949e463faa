"""The core's transcription jobs: speculative and committed, and the response waiting on them.

A job starts speculatively when the speaker pauses, and is either dropped (they went on)
or becomes the committed turn's transcript. A response asked for while a committed turn
is still being transcribed waits here until its words are known.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cosyagent.agent.events import Action, CancelTranscribe, PredictTurnEnd, ProtocolError, Transcribe, new_id
from cosyagent.agent.out_of_band import IN_CONVERSATION, ResponseContext
from cosyagent.agent.session_config import TurnDetection
from cosyagent.pipeline.turns import SpeechPaused


@dataclass(frozen=True)
class WaitingResponse:
    """A response to start once the pending user transcript is known."""

    params: dict[str, Any]
    automatic: bool  # from server VAD: skipped when every transcript is empty (a cough, a click)
    heard_words: bool = False  # some turn it waits for had words
    context: ResponseContext = IN_CONVERSATION


@dataclass
class TranscriptJob:
    item_id: str
    committed: bool = False
    result: str | None = None
    duration_s: float = 0.0


class TranscriptJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, TranscriptJob] = {}
        self.speculative: str | None = None  # the job started on the latest pause
        self.waiting: WaitingResponse | None = None

    def start(self, item_id: str, *, speculative: bool, committed: bool = False) -> str:
        job_id = new_id("asr")
        self._jobs[job_id] = TranscriptJob(item_id, committed=committed)
        if speculative:
            self.speculative = job_id
        return job_id

    def get(self, job_id: str) -> TranscriptJob | None:
        return self._jobs.get(job_id)

    def pop(self, job_id: str) -> TranscriptJob | None:
        if self.speculative == job_id:
            self.speculative = None
        return self._jobs.pop(job_id, None)

    def pending_committed(self) -> int:
        """Committed turns whose transcript has not come yet."""
        return sum(job.committed and job.result is None for job in self._jobs.values())

    def check_backlog(self, limit: int) -> None:
        """ProtocolError when ``limit`` committed turns still wait for their transcripts."""
        if self.pending_committed() >= limit:
            raise ProtocolError(
                f"{limit} committed turns are still being transcribed:"
                " wait for their transcripts before committing more",
                code="transcription_backlog",
            )

    def any_committed(self) -> bool:
        return any(job.committed for job in self._jobs.values())

    def speculate(
        self, item_id: str, pause: SpeechPaused, detection: TurnDetection | None, language: str | None
    ) -> list[Action]:
        """The speaker paused: transcribe what they said so far, and with semantic_vad ask the
        end-of-turn model too. The reply waits for the transcript however the turn ends, so it
        takes the CPU lane first; Smart Turn can only end the turn sooner than the silence wait,
        so it is due when the wait would end, and cancelled if the wait ends the turn first."""
        job_id = self.start(item_id, speculative=True)
        semantic = detection is not None and detection.semantic
        wait_left_ms = max(0, detection.silence_duration_ms - pause.silence_ms) if detection else 0
        actions: list[Action] = [
            Transcribe(item_id, job_id, pause.audio, language, due_in_ms=0 if semantic else wait_left_ms)
        ]
        if semantic:
            actions.append(PredictTurnEnd(job_id, pause.audio, due_in_ms=wait_left_ms))
        return actions

    def commit_speculation(self) -> str | None:
        """The turn ended on the latest pause: its speculative job (if any) becomes the turn's."""
        job_id, self.speculative = self.speculative, None
        return job_id

    def drop_speculation(self) -> list[CancelTranscribe]:
        job_id, self.speculative = self.speculative, None
        if job_id is None:
            return []
        self._jobs.pop(job_id, None)
        return [CancelTranscribe(job_id)]

    def cancel_all(self) -> list[CancelTranscribe]:
        cancels = [CancelTranscribe(job_id) for job_id in self._jobs]
        self._jobs.clear()
        return cancels

    def response_after(self, transcript: str) -> WaitingResponse | None:
        """A committed turn's transcript is known: the waiting response to start
        now, if any (it waits on while another committed turn is still being transcribed)."""
        waiting, self.waiting = self.waiting, None
        if waiting is None:
            return None
        if transcript:
            waiting = replace(waiting, heard_words=True)
        if self.any_committed():
            self.waiting = waiting
            return None
        return waiting if waiting.heard_words or not waiting.automatic else None
