"""GET / serves the playground page; GET /ui/{file_name} its scripts and styles.

The page is plain HTML, CSS and ES modules: no build step, nothing fetched from elsewhere, so it works
offline. It calls the public API only, with the key typed into it; the files themselves hold nothing
secret, so `ApiKeyMiddleware` lets them load without a key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse

from speaches.errors import NotFoundError

STATIC_DIR: Final = Path(__file__).parent / "static"

_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Only this server may be asked for anything (the WebSocket included: CSP's 'self' covers ws: and wss: to
# the same host); blob: carries the audio the page plays and offers for download.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS: Final = {
    # Revalidate on every load, so the page and its modules never come from two different versions.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}

# Served by name from this fixed set, so no request can reach a file outside the folder.
_FILES: Final = {path.name: path for path in STATIC_DIR.iterdir() if path.suffix in _MEDIA_TYPES}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def playground() -> FileResponse:
    return _file("index.html")


@router.get("/ui/{file_name}")
async def playground_file(file_name: str) -> FileResponse:
    if file_name == "index.html" or file_name not in _FILES:
        raise NotFoundError(f"The playground has no file '{file_name[:100]}'.", param="file_name")
    return _file(file_name)


def _file(name: str) -> FileResponse:
    path = _FILES[name]
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_HEADERS)
