"""Every error the API returns is an RFC 9457 problem document (application/problem+json).

Handlers turn the service's own `Problem`, Starlette's HTTP exceptions, validation errors and
anything unexpected into that one shape. Details never carry patient text or tokens.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("previsit.service")

PROBLEM_TYPE = "https://previsit.dev/problems/"
MEDIA_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}


class Problem(Exception):
    """An error the API reports as problem details."""

    def __init__(
        self, status: int, detail: str, *, kind: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind or _TITLES.get(status, "error").lower().replace(" ", "-")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return problem_body(self.status, self.detail, self.kind)


def problem_body(status: int, detail: str, kind: str | None = None) -> dict[str, Any]:
    name = kind or _TITLES.get(status, "error").lower().replace(" ", "-")
    return {"type": PROBLEM_TYPE + name, "title": _TITLES.get(status, "Error"), "status": status, "detail": detail}


def problem_response(
    status: int, detail: str, kind: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(problem_body(status, detail, kind), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through problem details."""

    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc.status, exc.detail, exc.kind, exc.headers)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "error")
        return problem_response(exc.status_code, detail, headers=dict(exc.headers or {}))

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Field paths and messages only: the rejected input itself may be patient text.
        problems = [f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in exc.errors()]
        body = problem_body(422, "; ".join(problems) or "invalid request", "validation")
        body["errors"] = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in exc.errors()]
        return JSONResponse(body, status_code=422, media_type=MEDIA_TYPE)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem_response(500, "Something went wrong on the server; nothing that was saved is lost.")

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)
