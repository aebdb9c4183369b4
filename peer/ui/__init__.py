"""The operator dashboard: static files served at `/ui/` by every agent.

Why static and open: the page holds no secret (the admin token lives in the browser tab's
sessionStorage, typed once or taken from the URL fragment, which browsers never send), so
serving it needs no token, and the API calls it makes carry the bearer token like any client.
No build step and nothing fetched at run time: the files ship in the package and work offline.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html", ".js": "application/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
#: The page may only talk to the agent that served it, and runs no inline script.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_ui_routes(app: web.Application) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("file") or "index.html"
        path = STATIC / name
        if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
            raise web.HTTPNotFound(text=f"no such dashboard file {name!r}")
        return web.Response(body=path.read_bytes(), headers={**_HEADERS, "Content-Type": f"{_TYPES[path.suffix]}; charset=utf-8"})

    app.router.add_get("/ui", redirect)
    app.router.add_get("/ui/", asset)
    app.router.add_get("/ui/{file}", asset)
