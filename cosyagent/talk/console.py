"""What ``cosyagent talk`` shows while a turn happens, and the summary once it is over."""

from __future__ import annotations

import base64
from typing import TextIO

from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
)

from cosyagent.talk.connection import Stamped
from cosyagent.talk.playback import Player
from cosyagent.talk.turn import SAID_TO_ITS_END, TurnResult


class LiveTranscript:
    """Prints each event worth seeing as it arrives: ``you said: ...`` once the user's words
    are recognised, then the agent's words as they stream in; feeds the reply's audio to a
    player when there is one. A reply cut short by more speech in the clip ends in ``[interrupted]``,
    one the LLM stopped short in ``[cut: max_output_tokens]``."""

    def __init__(self, out: TextIO, player: Player | None) -> None:
        self._out = out
        self._player = player
        self._response: str | None = None  # the response being produced
        self._agent_line_open = False

    def show(self, item: Stamped) -> None:
        event = item.event
        if isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent):
            self._line(f"you said: {event.transcript.strip()}")
        elif isinstance(event, ResponseCreatedEvent):
            self._response = event.response.id
        elif isinstance(event, ResponseAudioTranscriptDeltaEvent) and event.response_id == self._response:
            self._write(event.delta if self._agent_line_open else f"agent: {event.delta.lstrip()}")
            self._agent_line_open = True
        elif isinstance(event, ResponseAudioDeltaEvent) and event.response_id == self._response:
            if self._player is not None:
                self._player.write(base64.b64decode(event.delta))
        elif isinstance(event, ResponseDoneEvent) and event.response.id == self._response:
            self._response = None
            if self._agent_line_open:
                self._write(_line_end(event))
                self._agent_line_open = False

    def end(self) -> None:
        """Finish a line left open (the turn failed mid-reply), so that what follows starts on its own line."""
        if self._agent_line_open:
            self._write("\n")
            self._agent_line_open = False

    def _line(self, text: str) -> None:
        self._write(("\n" if self._agent_line_open else "") + text + "\n")
        self._agent_line_open = False

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


def print_summary(result: TurnResult, saved_to: str, playback: str, out: TextIO) -> None:
    """The reply's fate (played? saved where?) and the latency, stage by stage."""
    if result.interrupted_responses:
        print(
            f"note: {len(result.interrupted_responses)} earlier response(s) were cancelled by speech in the clip",
            file=out,
        )
    print(f"reply audio: {result.reply_audio_s:.2f} s, {playback}, saved to {saved_to}", file=out)
    v2v = result.voice_to_voice_ms
    v2v_text = f"{round(v2v)} ms (end of speech -> first reply audio)" if v2v is not None else "n/a"
    print(f"voice-to-voice: {v2v_text}", file=out)
    early = result.end_of_turn_ms
    if early is not None and early < 0:
        # The clip's speech went on after the server's end of turn (a pause, or the onset of a
        # next word at its edge), so the reply did not wait for the clip's end of speech.
        print(
            f"note: the server ended the turn {-round(early)} ms before the clip's speech ended; "
            "the speech after that was heard as a new turn",
            file=out,
        )
    stages = [("end-of-turn detection", result.end_of_turn_ms), ("transcription", result.asr_ms)]
    print("  client: " + ", ".join(f"{name} {value:.0f} ms" for name, value in stages if value is not None), file=out)
    timings = result.server_timings_ms
    if timings:
        server = ", ".join(f"{name.replace('_', ' ')} {value:.0f} ms" for name, value in timings.items())
        print(f"  server: {server}", file=out)
    out.flush()


def _line_end(done: ResponseDoneEvent) -> str:
    response = done.response
    if response.status not in SAID_TO_ITS_END:
        return " [interrupted]\n"
    if response.status == "incomplete":
        return f" [cut: {response.status_details.reason if response.status_details else 'incomplete'}]\n"
    return "\n"
