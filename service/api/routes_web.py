"""The browser page: `GET /` serves a small upload/jobs/transcript UI; `/web/<file>` its script and style."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from service.api.errors import ApiError

WEB_DIR = Path(__file__).parent / "web"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}  # the only files served under /web/
NO_CACHE = {"cache-control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse((WEB_DIR / "index.html").read_text(encoding="utf-8"), headers=NO_CACHE)


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no web asset {name!r}")
    return FileResponse(WEB_DIR / name, media_type=ASSETS[name], headers=NO_CACHE)
