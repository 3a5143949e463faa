"""`WS /v1/realtime`: the Realtime session over a WebSocket (JSON text frames)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cosyagent.agent.events import Event, server_error_event
from cosyagent.agent.session import RealtimeSession, SendEvent
from cosyagent.runtime.sessions import SessionRefused
from cosyagent.transports.base import AudioSink, JsonEvents

logger = logging.getLogger(__name__)

TRANSPORT = "websocket"  # its name in metrics and the session registry

SessionFactory = Callable[[AudioSink, SendEvent], RealtimeSession]

# Close code 1013 "try again later": the server is at its capacity or session limit.
CLOSE_TRY_AGAIN_LATER = 1013
# Close code 1001 "going away": the server is shutting down (the session was ended by it).
CLOSE_GOING_AWAY = 1001


class ClientPlayback(AudioSink):
    """The client plays the reply: its audio reaches it as ``response.output_audio.delta``
    events in the session's output format, paced by the session, and ``response.done``
    tells it when a reply was cut off. The server keeps no audio, so there is nothing to
    hold, clear or finish here."""

    def finish(self, response_id: str) -> None:
        pass

    def clear(self) -> None:
        pass

    def hold(self) -> None:
        pass

    def resume(self) -> None:
        pass


async def serve_websocket(websocket: WebSocket, make_session: SessionFactory) -> None:
    """Run one session on an accepted WebSocket until either side goes away."""
    serializer = JsonEvents()

    async def send(event: Event) -> None:
        for text in serializer.serialize(event):
            await websocket.send_text(text)

    async def receive() -> str | bytes | None:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return serializer.deserialize(text if text is not None else message.get("bytes") or b"").message

    session = make_session(ClientPlayback(), send)
    try:
        await session.run(receive)
    finally:
        if websocket.client_state == WebSocketState.CONNECTED:
            code, reason = (CLOSE_GOING_AWAY, session.ended_by_server) if session.ended_by_server else (1000, "")
            with contextlib.suppress(RuntimeError):  # the peer closed at the same moment
                await websocket.close(code=code, reason=reason or None)


async def refuse_websocket(websocket: WebSocket, refusal: SessionRefused) -> None:
    """Accept, say why in an ``error`` event, and close with 1013 "try again later" (the SDK
    shows the event; the close reason is the error's code)."""
    await websocket.accept()
    message = f"{refusal.message}; try again later"
    await websocket.send_text(json.dumps(server_error_event(message, refusal.code)))
    await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason=refusal.code)
