"""Plain ASGI middleware: request size limits and an access log without query strings or bodies.

Size limits act twice: a declared Content-Length over the limit is refused before any byte is read,
and a body that streams past the limit (chunked, or a lying header) stops the request with 413 as
soon as it does, so an oversized upload is never stored.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from previsit.service.problems import MEDIA_TYPE, problem_body

access_log = logging.getLogger("previsit.service.access")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request is larger than the limit of {limit} bytes.")


async def _send_problem(send: Send, status: int, detail: str) -> None:
    body = json.dumps(problem_body(status, detail)).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Uploads (multipart) may be up to `upload_limit` bytes; every other body up to `json_limit`."""

    def __init__(self, app: ASGIApp, *, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        multipart = headers.get("content-type", "").lower().startswith("multipart/form-data")
        limit = self.upload_limit if multipart else self.json_limit
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_problem(send, 400, "The Content-Length header is not a number.")
                return
            if int(declared) > limit:
                await _send_problem(send, 413, f"The request is larger than the limit of {limit} bytes.")
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


class AccessLogMiddleware:
    """One line a request: method, path (no query string), status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 0}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            access_log.info(
                "%s %s %s %.0fms",
                scope["method"],
                scope["path"],
                status["code"],
                (time.perf_counter() - started) * 1000,
            )
