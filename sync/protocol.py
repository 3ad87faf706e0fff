"""Protocol constants, typed errors and the wire helpers shared by the master and satellites."""

import json
import logging
import zlib
from typing import Any

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import exception_handler

from .errors import ErrorCode, SyncError

logger = logging.getLogger(__name__)

# Version 2: pushes carry their place in the satellite's push history (sync.push).
# Version 3: names carry their store, transactions their transfer link (stores.transfers).
# Version 4: a satellite initialises from a snapshot of the current rows (sync.snapshot);
# version 3 satellites still initialise by pulling the whole log.
PROTOCOL_VERSION = 4
PROTOCOL_MIN_VERSION = 3
API_PREFIX = "/api/sync/v1/"
SYNC_ID_HEADER = "X-Sync-Id"
VERSION_HEADER = "X-Sync-Protocol"
# The most records the master sends in one pull page.
MAX_PULL_LIMIT = 10_000


def version_mismatch(version: object) -> SyncError:
    return SyncError(
        ErrorCode.VERSION_MISMATCH,
        f"This master speaks sync protocol versions {PROTOCOL_MIN_VERSION}-{PROTOCOL_VERSION}, "
        f"but the satellite sent version {version}. Install the same msupply-sync release on "
        "the master and the satellite.",
        supported={"min": PROTOCOL_MIN_VERSION, "max": PROTOCOL_VERSION},
    )


def sync_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render every API error as {"code": ..., "message": ...} with its HTTP status."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, APIException):
        code = exc.get_codes()
        response.data = {
            "code": code if isinstance(code, str) else "invalid",
            "message": _flatten(exc.detail),
            **getattr(exc, "extra", {}),
        }
    return response


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def payload_too_large(limit: int) -> SyncError:
    return SyncError(
        ErrorCode.TOO_LARGE,
        f"The request body is larger than this server accepts ({limit} bytes). Send smaller "
        "batches (a lower batch size on the satellite).",
    )


def _upload_cut(meta: dict[str, Any], detail: str) -> SyncError:
    """Log a cut upload in one line and answer it with a typed 400, not a 500 and a traceback."""
    logger.warning(
        "A sync upload from %s was cut before its end (%s).",
        meta.get("REMOTE_ADDR", "an unknown address"),
        detail,
    )
    return SyncError(
        ErrorCode.UPLOAD_INCOMPLETE,
        "The upload stopped before its end (the link dropped). Nothing of it was applied; the "
        "satellite sends it again at its next try.",
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class GzipJSONParser(BaseParser):
    """JSON, optionally gzip-compressed, refused with 413 past the configured size.

    Not a JSONParser: DRF reads a JSONParser's whole body through Django's request.body, where
    a dropped link raises a 500 and Django's own upload limit answers with an HTML 400. This one
    reads the stream itself, so both get a typed JSON answer.
    """

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.SYNC_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        meta = request.META if request is not None else {}
        declared = int(meta.get("CONTENT_LENGTH") or 0)
        if declared > limit:
            raise payload_too_large(limit)
        try:
            body = stream.read(limit + 1) if stream is not None else b""
        except OSError as error:  # Django's UnreadablePostError: the link dropped mid-upload
            raise _upload_cut(meta, f"{error.__class__.__name__}: {error}") from None
        if len(body) < declared:
            raise _upload_cut(meta, f"{len(body)} of {declared} bytes")
        if len(body) > limit:
            raise payload_too_large(limit)
        if meta.get("HTTP_CONTENT_ENCODING", "").lower() == "gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(body, limit + 1)
            except zlib.error as error:
                raise ParseError(f"The body is not valid gzip: {error}.") from error
            if len(body) > limit or inflater.unconsumed_tail:
                raise payload_too_large(limit)
        try:
            return json.loads(body, parse_constant=_no_constant)
        except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
            raise ParseError(f"JSON parse error - {error}") from None
