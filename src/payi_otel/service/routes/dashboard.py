"""The web dashboard: one static page and its scripts, served at ``/`` and ``/dashboard``.

The page holds no data: its scripts read the reports and admin APIs, which decide who may read what
(the admin token when the service is not on loopback). Everything it loads comes from this package,
including the vendored chart library, so it works offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = "/dashboard/assets"
# The page may run only this package's scripts and talk only to this service.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def mount(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="dashboard-assets")

    async def page() -> FileResponse:
        return FileResponse(STATIC / "dashboard" / "index.html", media_type="text/html", headers=_HEADERS)

    for path in ("/", "/dashboard", "/dashboard/"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
