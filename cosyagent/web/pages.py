"""The browser client: the voice chat page at ``/`` and the TTS playground at ``/tts``.

Plain static files (HTML, CSS, JS) under ``static/``: no build step, nothing loaded
from outside the server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def pages_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def voice_chat() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @router.get("/tts")
    async def tts_playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "tts.html")

    router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return router
