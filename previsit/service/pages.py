"""The web pages: a patient chat page and a clinician review page, served by the API's own app.

They are static files (HTML, CSS, plain JavaScript modules) that talk to the JSON API, so there is no
build step, no template engine and nothing fetched from elsewhere at run time. Every page is sent
with a strict Content-Security-Policy (scripts, styles and connections from this origin only), which
the pages satisfy because they have no inline script or style. The patient token travels in the URL
fragment, which browsers never send to the server, so it never reaches an access log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"

# blob: images are thumbnails fetched with the clinician's Bearer header and shown from memory.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_STATIC_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


def pages_router(static_dir: Path = STATIC_DIR) -> APIRouter:
    """The page routes and `/static/...`. Pages carry no data: the scripts fetch it with credentials."""
    router = APIRouter(include_in_schema=False)
    root = static_dir.resolve()

    @router.get("/patient/{session_id}")
    async def patient_page(session_id: str) -> FileResponse:
        return _page("patient.html")

    @router.get("/clinician")
    async def clinician_page() -> FileResponse:
        return _page("clinician.html")

    @router.get("/clinician/sessions/{session_id}")
    async def review_page(session_id: str) -> FileResponse:
        return _page("review.html")

    @router.get("/static/{path:path}")
    async def static_file(path: str) -> FileResponse:
        # A plain route rather than a StaticFiles mount: it survives include_router, and a path that
        # climbs out of the directory or names an unknown type is simply not found.
        target = (root / path).resolve()
        media_type = _STATIC_TYPES.get(target.suffix)
        if media_type is None or not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(status_code=404, detail="No such file.")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        return FileResponse(target, media_type=media_type, headers=headers)

    return router


def install(app: FastAPI) -> None:
    """Add the pages to an app (the hook `previsit.service.app.create_app` calls)."""
    app.include_router(pages_router())
