"""The one vocabulary of sync errors: every code, its plain-language meaning and what to do.

The master's API answers `{"code", "message"}` with a code from here; the satellite raises the
same `SyncError` for what it meets itself (a link down, a wrong URL) and for what the master
answered, and its sync log, the admin, the commands and the OpenAPI schema all read these codes.
"""

from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException

# A translatable text, translated when shown (gettext_lazy); django-stubs names it for mypy.
if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise
else:
    StrOrPromise = str | Promise


class ErrorCode(models.TextChoices):
    # The caller's credentials (sync.auth).
    CREDENTIALS_MISSING = "credentials_missing", _("No sync credentials")
    SYNC_ID_MISSING = "sync_id_missing", _("No Sync ID")
    WRONG_CREDENTIALS = "wrong_credentials", _("Wrong sync user name or password")
    IDENTITY_MISMATCH = "identity_mismatch", _("Sync ID held by another server")
    KEY_REQUIRED = "key_required", _("Key required")
    KEY_INVALID = "key_invalid", _("Key refused")
    NOT_ENROLLED = "not_enrolled", _("Satellite holds no key")
    TOKEN_EXPIRED = "token_expired", _("Sync token expired")
    TOKEN_INVALID = "token_invalid", _("Sync token not valid")
    TOKEN_STALE = "token_stale", _("Sync token of a replaced key")
    UNKNOWN_SYNC_ID = "unknown_sync_id", _("Sync ID not in Sync with")
    SATELLITE_DISABLED = "satellite_disabled", _("Satellite disabled")
    LOCKED_OUT = "locked_out", _("Locked out after failed logins")
    # The protocol and the request (sync.api, sync.protocol).
    NOT_MASTER = "not_master", _("Not the master")
    VERSION_MISMATCH = "version_mismatch", _("Protocol version mismatch")
    SYNC_ID_MISMATCH = "sync_id_mismatch", _("Sync IDs differ")
    MALFORMED = "malformed", _("Malformed request")
    INVALID = "invalid", _("Invalid request field")
    PARSE_ERROR = "parse_error", _("Unreadable request body")
    TOO_LARGE = "too_large", _("Request too large")
    UPLOAD_INCOMPLETE = "upload_incomplete", _("Upload cut short")
    STORE_MISSING = "store_missing", _("Hosted store missing")
    REINITIALISE_REQUIRED = "reinitialise_required", _("Satellite must initialise again")
    # A pushed batch (sync.push).
    FORBIDDEN_RECORD = "forbidden_record", _("Record of another store or master data")
    MISSING_PARENT = "missing_parent", _("Record refers to one the master lacks")
    REJECTED_RECORD = "rejected_record", _("Record set aside by the master")
    BATCH_ID_REUSED = "batch_id_reused", _("Batch id reused with other changes")
    STALE_BATCH = "stale_batch", _("Batch older than the master's copy")
    # What the web framework itself answers.
    NOT_AUTHENTICATED = "not_authenticated", _("Not authenticated")
    AUTHENTICATION_FAILED = "authentication_failed", _("Authentication failed")
    PERMISSION_DENIED = "permission_denied", _("Permission denied")
    NOT_FOUND = "not_found", _("Not found")
    METHOD_NOT_ALLOWED = "method_not_allowed", _("Method not allowed")
    NOT_ACCEPTABLE = "not_acceptable", _("Not acceptable")
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", _("Unsupported media type")
    THROTTLED = "throttled", _("Too many requests")
    SERVER_ERROR = "server_error", _("Unexpected error on the master")
    # Met by the satellite itself (sync.client, sync.run).
    TIMEOUT = "timeout", _("Master stopped answering")
    UNREACHABLE = "unreachable", _("Master unreachable")
    UNAVAILABLE = "unavailable", _("Master or its proxy unavailable or overloaded")
    TLS = "tls", _("Master's certificate not trusted")
    WRONG_URL = "wrong_url", _("Not an msupply-sync master")
    BAD_ANSWER = "bad_answer", _("Unreadable answer from the master")
    IS_MASTER = "is_master", _("This server is the master")
    NO_MASTER = "no_master", _("No master in Sync with")
    INTERRUPTED = "interrupted", _("Run interrupted")
    INTERNAL_ERROR = "internal_error", _("Unexpected error")


# What a person does about each code, shown where a bare code would be.
REMEDIES: dict[str, StrOrPromise] = {
    ErrorCode.CREDENTIALS_MISSING: _(
        "Enter the shared sync user name and password in Preferences "
        "> Synchronisation on the satellite; it enrols at its next sync."
    ),
    ErrorCode.SYNC_ID_MISSING: _("Send the satellite's Sync ID in the X-Sync-Id header."),
    ErrorCode.WRONG_CREDENTIALS: _(
        "Make the sync user name and password the same in Preferences "
        "> Synchronisation on both servers."
    ),
    ErrorCode.IDENTITY_MISMATCH: _(
        "If this server replaces the one that held the Sync ID, reset "
        "its key in Sync with on the master, then sync again."
    ),
    ErrorCode.KEY_REQUIRED: _("Send the satellite's key: the shared password only enrols."),
    ErrorCode.KEY_INVALID: _(
        "Another server holds this Sync ID or the key was replaced: reset "
        "the key in Sync with on the master, then enter the shared password on the satellite."
    ),
    ErrorCode.NOT_ENROLLED: _(
        "Enter the shared sync password on the satellite; it enrols at its next sync."
    ),
    ErrorCode.TOKEN_EXPIRED: _("Nothing: the satellite logs in again with its key."),
    ErrorCode.TOKEN_INVALID: _("Nothing: the satellite logs in again with its key."),
    ErrorCode.TOKEN_STALE: _("Nothing: the satellite logs in again with its key."),
    ErrorCode.UNKNOWN_SYNC_ID: _("Add the satellite to Sync with on the master."),
    ErrorCode.SATELLITE_DISABLED: _("Enable the satellite in Sync with on the master."),
    ErrorCode.LOCKED_OUT: _(
        "Wait for the lockout to end, and check the sync password on both servers first."
    ),
    ErrorCode.NOT_MASTER: _("Point the satellite's Sync with entry at the master's URL."),
    ErrorCode.VERSION_MISMATCH: _("Install the same msupply-sync release on both servers."),
    ErrorCode.SYNC_ID_MISMATCH: _("Send the same Sync ID in the header and the body."),
    ErrorCode.MALFORMED: _(
        "Install the same msupply-sync release on both servers; if they are, "
        "send both servers' logs to your support team."
    ),
    ErrorCode.INVALID: _("Correct the named field and send the request again."),
    ErrorCode.PARSE_ERROR: _("Send a JSON body (gzip-compressed if you like)."),
    ErrorCode.TOO_LARGE: _("Lower the satellite's batch size (SYNC_BATCH_SIZE)."),
    ErrorCode.UPLOAD_INCOMPLETE: _("Nothing: the satellite sends it again at its next try."),
    ErrorCode.STORE_MISSING: _("Fix the store of the satellite's Sync with entry on the master."),
    ErrorCode.REINITIALISE_REQUIRED: _(
        "Nothing: the satellite's next sync initialises it again once its own changes are pushed."
    ),
    ErrorCode.FORBIDDEN_RECORD: _(
        "A satellite sends only its own store's data: send both servers' logs to your support team."
    ),
    ErrorCode.MISSING_PARENT: _("Send both servers' logs to your support team."),
    ErrorCode.REJECTED_RECORD: _(
        "Open Rejected records on the master: remove the conflict and "
        "retry, or discard the record with a note. The rest of the batch was applied."
    ),
    ErrorCode.BATCH_ID_REUSED: _(
        "A satellite restored or copied from another: send both servers' logs to your support team."
    ),
    ErrorCode.STALE_BATCH: _("Nothing: the satellite carries on from the master's record."),
    ErrorCode.NOT_AUTHENTICATED: _("Send the satellite's key or its run token."),
    ErrorCode.AUTHENTICATION_FAILED: _("Send the satellite's key or its run token."),
    ErrorCode.PERMISSION_DENIED: _("Use an account that may do this."),
    ErrorCode.NOT_FOUND: _("Check the URL in Sync with."),
    ErrorCode.METHOD_NOT_ALLOWED: _("Install the same msupply-sync release on both servers."),
    ErrorCode.NOT_ACCEPTABLE: _("Ask for JSON."),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: _("Send JSON."),
    ErrorCode.THROTTLED: _("Wait, then try again."),
    ErrorCode.SERVER_ERROR: _("Send the master's log to your support team."),
    ErrorCode.TIMEOUT: _(
        "Nothing: the next sync resumes where this one stopped. If it keeps "
        "happening, check the link."
    ),
    ErrorCode.UNREACHABLE: _("Check the master's URL in Sync with and this server's network."),
    ErrorCode.UNAVAILABLE: _(
        "Nothing: the next sync resumes where this one stopped. If it keeps "
        "happening, check that the master and the proxy in front of it are running."
    ),
    ErrorCode.TLS: _(
        "If the master's certificate comes from a private certificate authority, set "
        "SYNC_CA_BUNDLE to that authority's certificate on the satellite; otherwise fix the "
        "master's certificate."
    ),
    ErrorCode.WRONG_URL: _("Check the master's URL in Sync with."),
    ErrorCode.BAD_ANSWER: _("Install the same msupply-sync release on both servers."),
    ErrorCode.IS_MASTER: _("Nothing: the master waits for its satellites."),
    ErrorCode.NO_MASTER: _("Add the master (Sync ID 1) to Sync with."),
    ErrorCode.INTERRUPTED: _("Nothing: the next run carries on from what was committed."),
    ErrorCode.INTERNAL_ERROR: _("Send the server log to your support team."),
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
    """The code's meaning and what to do, in the active language; an unknown code as it is."""
    if code not in ErrorCode.values:
        return code
    return gettext("%(label)s. %(remedy)s") % {
        "label": ErrorCode(code).label,
        "remedy": REMEDIES[code],
    }


def error_text(code: str, message: str = "") -> str:
    """A stored error as the viewer reads it: the code's label and remedy translated, the detail.

    The sync log and the exchanges store the code and the English message it was raised with.
    An English viewer reads that message; any other reads the code's label and remedy in their
    language, then the stored message as the detail when it says more (the field, the record).
    """
    if code not in ErrorCode.values:
        return message or code
    if (translation.get_language() or "en").split("-")[0] == "en":
        # The stored message is English already, and says more than the code's words.
        return message or error_explain(code)
    with translation.override("en"):
        default = error_explain(code)
    explained = error_explain(code)
    if not message or message == default:
        return explained
    return gettext("%(explanation)s Detail: %(detail)s") % {
        "explanation": explained,
        "detail": message,
    }


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
        # The wire and the stored records stay English: a viewer's language is applied on display.
        with translation.override("en"):
            message = str(message or error_explain(code))
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
