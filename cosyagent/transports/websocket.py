"""`WS /v1/realtime`: the Realtime session over a WebSocket (JSON text frames)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cosyagent.agent.events import Event
from cosyagent.agent.session import RealtimeSession, SendEvent

logger = logging.getLogger(__name__)

SessionFactory = Callable[[SendEvent], RealtimeSession]

# Close code 1013 "try again later": the server is at its session limit.
CLOSE_TRY_AGAIN_LATER = 1013


async def serve_websocket(websocket: WebSocket, make_session: SessionFactory) -> None:
    """Run one session on an accepted WebSocket until either side goes away."""

    async def send(event: Event) -> None:
        await websocket.send_text(json.dumps(event, separators=(",", ":")))

    async def receive() -> str | bytes | None:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    session = make_session(send)
    try:
        await session.run(receive)
    finally:
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError):  # the peer closed at the same moment
                await websocket.close()


async def refuse_websocket(websocket: WebSocket, error: Event) -> None:
    """Accept, say why in an ``error`` event, and close (the SDK shows the event)."""
    await websocket.accept()
    await websocket.send_text(json.dumps(error))
    await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason=error["error"]["code"])
