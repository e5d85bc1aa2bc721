"""One JSON error shape for every error response:
`{"ok": false, "error": "...", "errors": [...], "status": N}`."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import BadRequest, HTTPException

from edge_node.errors import EdgeError, ThrottledError

log = logging.getLogger(__name__)

ERROR_SCHEMA = {
    "type": "object",
    "required": ["ok", "error", "errors", "status"],
    "properties": {
        "ok": {"type": "boolean", "enum": [False]},
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "integer"},
    },
}


def error_response(message: str, status: int, errors: list[str] | None = None) -> Response:
    """Build the error response."""
    resp = jsonify({"ok": False, "error": message, "errors": errors or [message],
                    "status": status})
    resp.status_code = status
    return resp


def _edge_error(exc: EdgeError) -> Response:
    """Domain errors carry their own status and safe message."""
    response = error_response(exc.message, exc.status, exc.errors)
    response.headers.extend(edge_headers(exc))
    return response


def edge_headers(exc: EdgeError) -> list[tuple[str, str]]:
    """Headers a domain error implies: `Retry-After` on a throttled login."""
    if isinstance(exc, ThrottledError):
        return [("Retry-After", str(exc.retry_after_s))]
    return []


def _http_error(exc: HTTPException) -> Response:
    """Werkzeug errors (404 route, 405, 413, malformed JSON) in our shape."""
    status = exc.code or 500
    if isinstance(exc, BadRequest) and status == 400:
        message = "request body is not valid JSON"
    elif status == 413:
        message = "request body too large"
    else:
        message = exc.name.lower()
    response = error_response(message, status)
    response.headers.extend(protocol_headers(exc))
    return response


def protocol_headers(exc: HTTPException) -> list[tuple[str, str]]:
    """Headers the protocol wants with this error, e.g. `Allow` on a 405 (RFC 9110 15.5.6).

    Replacing Werkzeug's own error page with ours must not lose them.
    """
    return [(name, value) for name, value in exc.get_headers()
            if name.lower() != "content-type"]


def _unexpected(exc: Exception) -> Response:
    """A bug: log the type only (the message may hold PII) and answer 500."""
    log.exception("unhandled %s", type(exc).__name__)
    return error_response("internal error", 500)


def init_app(app: Flask) -> None:
    """Register the handlers."""
    app.register_error_handler(EdgeError, _edge_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
