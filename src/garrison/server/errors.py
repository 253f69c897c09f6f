"""OpenAI's error object for every error the API returns: `{"error": {"message", "type", "param", "code"}}`.

The official SDK maps the status code to its exception class (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 409 ConflictError, 429 RateLimitError) and reads `error.message` from this shape, so every
4xx garrison answers, including FastAPI's own validation errors, unknown routes, malformed JSON and oversized
bodies, goes through here. A 500 is only ever a garrison bug, answered in the same shape without internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from garrison.store import Conflict, NotFound, StoreError

log = logging.getLogger("garrison.server")

# OpenAI's error types by status; `code` carries the precise reason.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error answered to the client as OpenAI's error object.

    Args:
        status_code: HTTP status.
        message: what went wrong, in words the caller can act on.
        code: machine-readable reason (e.g. "invalid_size", "content_policy_violation").
        param: the request parameter at fault, if one is.
        headers: extra response headers (Retry-After on a 429).
        extra: extra keys inside the error object (the policy category on a refusal).
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type or ERROR_TYPES.get(status_code, "invalid_request_error")
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code, self.extra)


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None, extra: dict | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code, **(extra or {})}}


def error_response(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    err = APIError(status_code, message, code=code, param=param, headers=headers)
    return JSONResponse(err.body(), status_code=status_code, headers=err.headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, code=code, param=param)


def not_found(message: str, param: str | None = None) -> APIError:
    return APIError(404, message, code="not_found", param=param)


def _param_of(loc: tuple | list) -> str | None:
    # FastAPI locations look like ("body", "seconds") or ("query", "limit"); the SDK wants just the name.
    names = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(names) or None


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors[:5]:
        where = _param_of(e.get("loc", ())) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


_STATUS_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape; bad input is a 4xx with a reason, never a 500."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "the request body is not valid JSON", code="invalid_json")
        param = _param_of(errors[0].get("loc", ())) if errors else None
        return error_response(400, _validation_message(errors), code="invalid_value", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no such route: {request.method} {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(
            exc.status_code,
            message,
            code=_STATUS_CODES.get(exc.status_code, "http_error"),
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, str(exc), code="not_found")

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, str(exc), code="conflict")

    @app.exception_handler(StoreError)
    async def _store_unavailable(request: Request, exc: StoreError) -> JSONResponse:
        # The database is locked too long or unreachable: the client's request was fine; it may retry.
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            503,
            "the store is busy or unreachable; retry shortly",
            code="store_unavailable",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it with its traceback, tell the client nothing internal.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; it has been logged", code="internal_error")
