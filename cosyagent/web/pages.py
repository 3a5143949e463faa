"""The browser client: the voice chat page at ``/``, the TTS playground at ``/tts``, and at
``/avatar`` the voice chat page with a face whose mouth follows the agent's visemes.

Plain static files (HTML, CSS, JS) under ``static/``: no build step, nothing loaded
from outside the server.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def pages_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def voice_chat() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @router.get("/avatar")
    async def avatar() -> HTMLResponse:
        return HTMLResponse(avatar_page())

    @router.get("/tts")
    async def tts_playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "tts.html")

    router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return router


@functools.cache
def avatar_page() -> str:
    """The voice chat page, asking for visemes and words, with ``avatar.js`` (which draws the face)."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    edits = {
        '<body data-title-key="chat.title">': '<body data-title-key="avatar.title" data-timestamps="word,viseme">',
        '<a href="./" aria-current="page" data-i18n="nav.chat">Voice chat</a>': (
            '<a href="./" data-i18n="nav.chat">Voice chat</a>'
            '\n      <a href="avatar" aria-current="page" data-i18n="nav.avatar">Avatar</a>'
        ),
        "</head>": '  <script src="static/avatar.js" defer></script>\n</head>',
    }
    for old, new in edits.items():
        if page.count(old) != 1:
            raise RuntimeError(f"index.html no longer has exactly one {old!r}: update avatar_page()")
        page = page.replace(old, new)
    return page
