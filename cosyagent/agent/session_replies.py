"""A session's replies as they play: each ``StartResponse`` streams the LLM's text through the
synthesizer, paces its audio against the transport's sink, and tells the core how it went.

:class:`RealtimeSession` owns the tasks; this module owns what one reply does in its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from cosyagent.agent.events import Action, StartResponse
from cosyagent.agent.realtime_core import RealtimeCore
from cosyagent.engines.base import (
    ChatLLM,
    EngineError,
    EngineUnavailableError,
    SpeechSynthesizer,
    UnspeakableTextError,
)
from cosyagent.engines.scheduling import needed_by
from cosyagent.pipeline.playout import SYNTHESIS_AHEAD_MS, AudioSink, Playout
from cosyagent.pipeline.reply import (
    AudioChunk,
    IncompleteReason,
    ReplyIncomplete,
    ReplyRequest,
    ReplyTimings,
    SpokenText,
    TextDelta,
    stream_reply,
)
from cosyagent.telemetry import SessionObserver

logger = logging.getLogger(__name__)

Execute = Callable[[list[Action]], None]
"""Carries out what the core decided (the session's ``_execute``)."""


class SessionReplies:
    def __init__(
        self,
        core: RealtimeCore,
        llm: ChatLLM,
        tts: SpeechSynthesizer,
        sink: AudioSink,
        output_lead_ms: float,
        execute: Execute,
        observer: SessionObserver | None,
    ) -> None:
        self._core = core
        self._llm = llm
        self._tts = tts
        self._sink = sink
        self._lead_ms = output_lead_ms
        self._execute = execute
        self._observer = observer
        self._playouts: dict[str, Playout] = {}

    def wake_playouts(self) -> None:
        """Input arrived that may have released held reply audio."""
        for playout in self._playouts.values():
            playout.wake()

    async def play(self, start: StartResponse) -> None:
        """Run one reply to its end, or until cancelled (barge-in, ``response.cancel``); an
        engine failure or a bug ends it with ``response.done`` status ``failed``."""
        response_id = start.response_id
        core, timings = self._core, ReplyTimings()
        playout = self._playouts[response_id] = Playout(
            core, self._sink, response_id, self._lead_ms, lambda: self._execute(core.pop_audio(response_id))
        )
        request = ReplyRequest(
            start.messages,
            start.voice,
            start.speed,
            start.max_tokens,
            start.audio,
            start.tools,
            start.tool_choice,
            on_tool_call=lambda piece: self._execute(core.response_tool_call(response_id, piece)),
            timed=start.timestamps,
            audio_ahead_s=lambda: playout.audio_ahead_ms() / 1000.0,
            script=start.script,
        )
        pacing = asyncio.create_task(playout.run(), name=f"{response_id}-playout")
        # Each clause is needed when the audio before it runs out; the first one since the reply
        # began, so replies waiting for the LLM and first clauses take the cores in their order.
        deadline = needed_by(
            lambda: (
                timings.started
                if timings.tts_first_audio is None
                else time.monotonic() + playout.audio_ahead_ms() / 1000.0
            )
        )
        llm_text: str | None = None
        incomplete: IncompleteReason | None = None
        try:
            with deadline:  # the reply's generator runs in this task: its engine jobs carry it
                async for event in stream_reply(request, self._llm, self._tts, timings):
                    if isinstance(event, TextDelta):
                        self._execute(core.response_text(response_id, event.text))
                    elif isinstance(event, AudioChunk):
                        core.response_audio(response_id, event.samples, event.clause, event.timings)
                        playout.wake()
                        # The reply's generator (and so the synthesizer) waits here; the LLM goes on.
                        await playout.until_unsent_at_most(SYNTHESIS_AHEAD_MS)
                    elif isinstance(event, SpokenText):
                        llm_text = event.text
                    elif isinstance(event, ReplyIncomplete):
                        incomplete = event.reason
            core.flush_audio(response_id)
            playout.finish()
            await pacing
            unplayed_ms = playout.audio_ahead_ms()  # (from here the idle timeout counts, if any)
            self._execute(core.response_finished(response_id, timings.as_dict(), unplayed_ms, llm_text, incomplete))
        except EngineUnavailableError as exc:
            logger.warning("response %s failed: engine unavailable: %s", response_id, exc)
            self._execute(core.response_failed(response_id, str(exc), "engine_unavailable"))
        except UnspeakableTextError as exc:  # the LLM answered in a language the voice cannot speak
            logger.warning("response %s failed: %s", response_id, exc)
            self._execute(core.response_failed(response_id, str(exc), "unsupported_language"))
        except EngineError as exc:
            logger.warning("response %s failed: %s", response_id, exc)
            self._execute(core.response_failed(response_id, str(exc), "engine_error"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must end this reply with an error, not kill the session
            logger.exception("response %s crashed", response_id)
            self._execute(core.response_failed(response_id, f"internal error: {exc!r}", "internal_error"))
        finally:
            if self._observer is not None:
                self._observer.reply_timings(
                    llm_first_token=timings.llm_first_token,
                    first_clause=timings.first_clause,
                    tts_first_audio=timings.tts_first_audio,
                )
            pacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacing
            self._playouts.pop(response_id, None)
