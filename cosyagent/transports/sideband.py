"""``WS /v1/realtime?call_id=...``: a server-side client follows and steers a phone call's session,
a SIP call's or a carrier stream's (:mod:`.phone_calls`).

As OpenAI's sideband connection: the socket receives every event the call's session sends
from the moment it attaches (transcripts, responses, their audio deltas) and may send any
client event (``session.update``, ``response.create``, ``conversation.item.create``, ...),
which the session takes as if the call's own client had sent it; an ``error`` answering a
bad one goes to every follower. The audio stays on the phone line. When the call ends, the
socket closes with 1000; a follower that falls far behind is dropped (1008). Several
followers may attach to one call; closing one changes nothing for the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cosyagent.transports.base import json_event
from cosyagent.transports.phone_calls import LiveCall

logger = logging.getLogger(__name__)

CLOSE_POLICY = 1008


async def follow_call(websocket: WebSocket, call: LiveCall) -> None:
    """Serve one accepted sideband socket until the call or the socket ends."""
    media = call.media
    events = media.watch()
    logger.info("%s: a sideband client attached", call.label)

    async def forward() -> str:
        while (event := await events.get()) is not None:
            try:
                await websocket.send_text(json_event(event))
            except (WebSocketDisconnect, RuntimeError, OSError):
                return "gone"
        return "ended" if media.ended else "behind"

    async def listen() -> str:
        while True:
            try:
                message = await websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return "gone"
            if message["type"] == "websocket.disconnect":
                return "gone"
            data = message.get("text")
            media.post(data if data is not None else message.get("bytes") or b"")

    tasks = [asyncio.create_task(forward()), asyncio.create_task(listen())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        outcome = next(iter(done)).result()
    finally:
        media.unwatch(events)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    logger.info("%s: the sideband client left (%s)", call.label, outcome)
    if websocket.client_state == WebSocketState.CONNECTED:
        code, reason = (
            (1000, "the call ended") if outcome == "ended" else (CLOSE_POLICY, "fell behind the call's events")
        )
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=code, reason=reason)
