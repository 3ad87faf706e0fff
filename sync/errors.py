"""The one vocabulary of sync errors: every code, its plain-language meaning and what to do.

The master's API answers `{"code", "message"}` with a code from here; the satellite raises the
same `SyncError` for what it meets itself (a link down, a wrong URL) and for what the master
answered, and its sync log, the admin, the commands and the OpenAPI schema all read these codes.
"""

from typing import Any

from django.db import models
from rest_framework import status
from rest_framework.exceptions import APIException


class ErrorCode(models.TextChoices):
    # The caller's credentials (sync.auth).
    CREDENTIALS_MISSING = "credentials_missing", "No sync credentials"
    SYNC_ID_MISSING = "sync_id_missing", "No Sync ID"
    WRONG_CREDENTIALS = "wrong_credentials", "Wrong sync user name or password"
    IDENTITY_MISMATCH = "identity_mismatch", "Sync ID held by another server"
    KEY_REQUIRED = "key_required", "Key required"
    KEY_INVALID = "key_invalid", "Key refused"
    NOT_ENROLLED = "not_enrolled", "Satellite holds no key"
    TOKEN_EXPIRED = "token_expired", "Sync token expired"
    TOKEN_INVALID = "token_invalid", "Sync token not valid"
    TOKEN_STALE = "token_stale", "Sync token of a replaced key"
    UNKNOWN_SYNC_ID = "unknown_sync_id", "Sync ID not in Sync with"
    SATELLITE_DISABLED = "satellite_disabled", "Satellite disabled"
    LOCKED_OUT = "locked_out", "Locked out after failed logins"
    # The protocol and the request (sync.api, sync.protocol).
    NOT_MASTER = "not_master", "Not the master"
    VERSION_MISMATCH = "version_mismatch", "Protocol version mismatch"
    SYNC_ID_MISMATCH = "sync_id_mismatch", "Sync IDs differ"
    MALFORMED = "malformed", "Malformed request"
    INVALID = "invalid", "Invalid request field"
    PARSE_ERROR = "parse_error", "Unreadable request body"
    TOO_LARGE = "too_large", "Request too large"
    UPLOAD_INCOMPLETE = "upload_incomplete", "Upload cut short"
    STORE_MISSING = "store_missing", "Hosted store missing"
    REINITIALISE_REQUIRED = "reinitialise_required", "Satellite must initialise again"
    # A pushed batch (sync.push).
    FORBIDDEN_RECORD = "forbidden_record", "Record of another store or master data"
    MISSING_PARENT = "missing_parent", "Record refers to one the master lacks"
    REJECTED_RECORD = "rejected_record", "Record set aside by the master"
    BATCH_ID_REUSED = "batch_id_reused", "Batch id reused with other changes"
    STALE_BATCH = "stale_batch", "Batch older than the master's copy"
    # What the web framework itself answers.
    NOT_AUTHENTICATED = "not_authenticated", "Not authenticated"
    AUTHENTICATION_FAILED = "authentication_failed", "Authentication failed"
    PERMISSION_DENIED = "permission_denied", "Permission denied"
    NOT_FOUND = "not_found", "Not found"
    METHOD_NOT_ALLOWED = "method_not_allowed", "Method not allowed"
    NOT_ACCEPTABLE = "not_acceptable", "Not acceptable"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", "Unsupported media type"
    THROTTLED = "throttled", "Too many requests"
    SERVER_ERROR = "server_error", "Unexpected error on the master"
    # Met by the satellite itself (sync.client, sync.run).
    TIMEOUT = "timeout", "Master stopped answering"
    UNREACHABLE = "unreachable", "Master unreachable"
    UNAVAILABLE = "unavailable", "Master or its proxy unavailable or overloaded"
    TLS = "tls", "Master's certificate not trusted"
    WRONG_URL = "wrong_url", "Not an msupply-sync master"
    BAD_ANSWER = "bad_answer", "Unreadable answer from the master"
    IS_MASTER = "is_master", "This server is the master"
    NO_MASTER = "no_master", "No master in Sync with"
    INTERRUPTED = "interrupted", "Run interrupted"
    INTERNAL_ERROR = "internal_error", "Unexpected error"


# What a person does about each code, shown where a bare code would be.
REMEDIES: dict[str, str] = {
    ErrorCode.CREDENTIALS_MISSING: "Enter the shared sync user name and password in Preferences "
    "> Synchronisation on the satellite; it enrols at its next sync.",
    ErrorCode.SYNC_ID_MISSING: "Send the satellite's Sync ID in the X-Sync-Id header.",
    ErrorCode.WRONG_CREDENTIALS: "Make the sync user name and password the same in Preferences "
    "> Synchronisation on both servers.",
    ErrorCode.IDENTITY_MISMATCH: "If this server replaces the one that held the Sync ID, reset "
    "its key in Sync with on the master, then sync again.",
    ErrorCode.KEY_REQUIRED: "Send the satellite's key: the shared password only enrols.",
    ErrorCode.KEY_INVALID: "Another server holds this Sync ID or the key was replaced: reset "
    "the key in Sync with on the master, then enter the shared password on the satellite.",
    ErrorCode.NOT_ENROLLED: "Enter the shared sync password on the satellite; it enrols at its "
    "next sync.",
    ErrorCode.TOKEN_EXPIRED: "Nothing: the satellite logs in again with its key.",
    ErrorCode.TOKEN_INVALID: "Nothing: the satellite logs in again with its key.",
    ErrorCode.TOKEN_STALE: "Nothing: the satellite logs in again with its key.",
    ErrorCode.UNKNOWN_SYNC_ID: "Add the satellite to Sync with on the master.",
    ErrorCode.SATELLITE_DISABLED: "Enable the satellite in Sync with on the master.",
    ErrorCode.LOCKED_OUT: "Wait for the lockout to end, and check the sync password on both "
    "servers first.",
    ErrorCode.NOT_MASTER: "Point the satellite's Sync with entry at the master's URL.",
    ErrorCode.VERSION_MISMATCH: "Install the same msupply-sync release on both servers.",
    ErrorCode.SYNC_ID_MISMATCH: "Send the same Sync ID in the header and the body.",
    ErrorCode.MALFORMED: "Install the same msupply-sync release on both servers; if they are, "
    "send both servers' logs to your support team.",
    ErrorCode.INVALID: "Correct the named field and send the request again.",
    ErrorCode.PARSE_ERROR: "Send a JSON body (gzip-compressed if you like).",
    ErrorCode.TOO_LARGE: "Lower the satellite's batch size (SYNC_BATCH_SIZE).",
    ErrorCode.UPLOAD_INCOMPLETE: "Nothing: the satellite sends it again at its next try.",
    ErrorCode.STORE_MISSING: "Fix the store of the satellite's Sync with entry on the master.",
    ErrorCode.REINITIALISE_REQUIRED: "Nothing: the satellite's next sync initialises it again "
    "once its own changes are pushed.",
    ErrorCode.FORBIDDEN_RECORD: "A satellite sends only its own store's data: send both servers' "
    "logs to your support team.",
    ErrorCode.MISSING_PARENT: "Send both servers' logs to your support team.",
    ErrorCode.REJECTED_RECORD: "Open Rejected records on the master: remove the conflict and "
    "retry, or discard the record with a note. The rest of the batch was applied.",
    ErrorCode.BATCH_ID_REUSED: "A satellite restored or copied from another: send both "
    "servers' logs to your support team.",
    ErrorCode.STALE_BATCH: "Nothing: the satellite carries on from the master's record.",
    ErrorCode.NOT_AUTHENTICATED: "Send the satellite's key or its run token.",
    ErrorCode.AUTHENTICATION_FAILED: "Send the satellite's key or its run token.",
    ErrorCode.PERMISSION_DENIED: "Use an account that may do this.",
    ErrorCode.NOT_FOUND: "Check the URL in Sync with.",
    ErrorCode.METHOD_NOT_ALLOWED: "Install the same msupply-sync release on both servers.",
    ErrorCode.NOT_ACCEPTABLE: "Ask for JSON.",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "Send JSON.",
    ErrorCode.THROTTLED: "Wait, then try again.",
    ErrorCode.SERVER_ERROR: "Send the master's log to your support team.",
    ErrorCode.TIMEOUT: "Nothing: the next sync resumes where this one stopped. If it keeps "
    "happening, check the link.",
    ErrorCode.UNREACHABLE: "Check the master's URL in Sync with and this server's network.",
    ErrorCode.UNAVAILABLE: "Nothing: the next sync resumes where this one stopped. If it keeps "
    "happening, check that the master and the proxy in front of it are running.",
    ErrorCode.TLS: "If the master's certificate comes from a private certificate authority, set "
    "SYNC_CA_BUNDLE to that authority's certificate on the satellite; otherwise fix the "
    "master's certificate.",
    ErrorCode.WRONG_URL: "Check the master's URL in Sync with.",
    ErrorCode.BAD_ANSWER: "Install the same msupply-sync release on both servers.",
    ErrorCode.IS_MASTER: "Nothing: the master waits for its satellites.",
    ErrorCode.NO_MASTER: "Add the master (Sync ID 1) to Sync with.",
    ErrorCode.INTERRUPTED: "Nothing: the next run carries on from what was committed.",
    ErrorCode.INTERNAL_ERROR: "Send the server log to your support team.",
}

# The HTTP status each code the master answers with carries; the others are the satellite's own.
STATUSES: dict[str, int] = {
    ErrorCode.CREDENTIALS_MISSING: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.SYNC_ID_MISSING: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.WRONG_CREDENTIALS: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.IDENTITY_MISMATCH: status.HTTP_409_CONFLICT,
    ErrorCode.KEY_REQUIRED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.KEY_INVALID: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.NOT_ENROLLED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.TOKEN_EXPIRED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.TOKEN_INVALID: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.TOKEN_STALE: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.UNKNOWN_SYNC_ID: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.SATELLITE_DISABLED: status.HTTP_403_FORBIDDEN,
    ErrorCode.LOCKED_OUT: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.NOT_MASTER: status.HTTP_409_CONFLICT,
    ErrorCode.VERSION_MISMATCH: status.HTTP_409_CONFLICT,
    ErrorCode.SYNC_ID_MISMATCH: status.HTTP_400_BAD_REQUEST,
    ErrorCode.MALFORMED: status.HTTP_400_BAD_REQUEST,
    ErrorCode.INVALID: status.HTTP_400_BAD_REQUEST,
    ErrorCode.PARSE_ERROR: status.HTTP_400_BAD_REQUEST,
    ErrorCode.TOO_LARGE: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.UPLOAD_INCOMPLETE: status.HTTP_400_BAD_REQUEST,
    ErrorCode.STORE_MISSING: status.HTTP_409_CONFLICT,
    ErrorCode.REINITIALISE_REQUIRED: status.HTTP_409_CONFLICT,
    ErrorCode.FORBIDDEN_RECORD: status.HTTP_403_FORBIDDEN,
    ErrorCode.MISSING_PARENT: status.HTTP_409_CONFLICT,
    ErrorCode.REJECTED_RECORD: status.HTTP_409_CONFLICT,
    ErrorCode.BATCH_ID_REUSED: status.HTTP_409_CONFLICT,
    ErrorCode.STALE_BATCH: status.HTTP_409_CONFLICT,
    ErrorCode.NOT_AUTHENTICATED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.AUTHENTICATION_FAILED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.PERMISSION_DENIED: status.HTTP_403_FORBIDDEN,
    ErrorCode.NOT_FOUND: status.HTTP_404_NOT_FOUND,
    ErrorCode.METHOD_NOT_ALLOWED: status.HTTP_405_METHOD_NOT_ALLOWED,
    ErrorCode.NOT_ACCEPTABLE: status.HTTP_406_NOT_ACCEPTABLE,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.THROTTLED: status.HTTP_429_TOO_MANY_REQUESTS,
    ErrorCode.SERVER_ERROR: status.HTTP_500_INTERNAL_SERVER_ERROR,
}


def error_explain(code: str) -> str:
    """The code's meaning and what to do, in plain words; a code from a newer release as it is."""
    if code not in ErrorCode.values:
        return code
    return f"{ErrorCode(code).label}. {REMEDIES[code]}"


class SyncError(APIException):
    """A sync failure with a stable code from ErrorCode and a message saying what to do.

    The master raises it to answer a request (with the code's HTTP status, or `status`); the
    satellite raises it for what it meets, and for what the master answered, with that answer's
    status and its whole body (`answer`: stale_batch carries the master's record).
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        status: int | None = None,
        answer: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        message = message or error_explain(code)
        super().__init__(message, code)
        self.code = code
        self.message = message
        self.status = status
        self.status_code = status or STATUSES.get(code, 500)
        self.answer = answer or {}
        # More fields of the API's answer (locked_out's retry_after_seconds).
        self.extra = extra

    def __str__(self) -> str:
        return self.message
