"""The browser page: `GET /` serves a small upload/jobs/transcript UI; `/web/<file>` its script and style."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from service.api.errors import ApiError

WEB_DIR = Path(__file__).parent / "web"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}  # the only files served under /web/
NO_CACHE = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
# The page keeps the API token (localStorage), so only its own files may run or style it: no inline script or
# style (index.html has none), fetches to this origin only, audio from here or from blobs it fetched itself
# (with the token), the favicon a `data:` URL; no framing, no <base>, forms post nowhere else.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {**NO_CACHE, "content-security-policy": CSP, "referrer-policy": "no-referrer"}

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse((WEB_DIR / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no web asset {name!r}")
    return FileResponse(WEB_DIR / name, media_type=ASSETS[name], headers=NO_CACHE)
