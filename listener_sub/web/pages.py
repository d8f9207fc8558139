"""What every page of the web face shares: templates rendered with every value escaped, the security headers (a
strict Content-Security-Policy: no script, nothing from another origin), the stylesheet, and refusals as pages with a
4xx status and one clear line."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.exceptions import HTTPException

CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
TEMPLATES = Environment(
    loader=PackageLoader("listener_sub.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
STYLE = resources.files("listener_sub.web").joinpath("static/style.css").read_bytes()


def page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A template rendered (every value HTML-escaped) as a response."""
    return HTMLResponse(TEMPLATES.get_template(template).render(**values), status_code=status)


def refusal(status: int, message: str) -> HTMLResponse:
    """A refused request: the status and one line saying what was wrong and what to do."""
    return page("error.html", status=status, status_code=status, message=message)


def validation_line(error: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: which field, what was wrong."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) + " (send the form from the page)"


def secure(app: FastAPI) -> FastAPI:
    """Add the security headers to every response, the stylesheet route, and refusals as pages (never a 500 for a bad
    request: validation errors are 422, unknown routes 404)."""

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> HTMLResponse:
        return refusal(422, validation_line(error))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> HTMLResponse:
        return refusal(error.status_code, str(error.detail))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon: a browser's automatic request is not an error

    @app.get("/static/style.css", include_in_schema=False)
    def style() -> Response:
        return Response(STYLE, media_type="text/css")

    return app
