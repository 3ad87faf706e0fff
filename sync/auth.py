"""Authentication of satellites on the master: sync user name and password, or a run token."""

import base64
import binascii
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework import status
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from .models import AuthFailure, SyncPeer, SyncPreferences
from .protocol import SYNC_ID_HEADER, SyncAPIError
from .selectors import preferences_get

TOKEN_SALT = "msupply.sync.token"  # noqa: S105 - a signing namespace, not a secret


@dataclass(frozen=True)
class SyncCaller:
    """The satellite making a request, once authenticated."""

    peer: SyncPeer
    is_authenticated: bool = True

    @property
    def sync_id(self) -> int:
        return self.peer.sync_id


def _credentials_key(preferences: SyncPreferences) -> str:
    # Changing the user name or password changes this key, which revokes every issued token.
    return salted_hmac(TOKEN_SALT, preferences.username + preferences.password_hash).hexdigest()


def token_issue(*, sync_id: int) -> str:
    """A signed token that lets `sync_id` skip the slow password hash for a while."""
    return signing.dumps(
        {"sync_id": sync_id, "key": _credentials_key(preferences_get())}, salt=TOKEN_SALT
    )


def _failed(
    message: str, code: str, status_code: int = status.HTTP_401_UNAUTHORIZED
) -> SyncAPIError:
    return SyncAPIError(message, code, status_code)


class SyncAuthentication(BaseAuthentication):
    """Checks the caller's sync ID against Sync with and its credentials; locks out guessers."""

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="msupply-sync"'

    def authenticate(self, request: Request) -> tuple[SyncCaller, None]:
        address = request.META.get("REMOTE_ADDR")
        raw_sync_id = request.headers.get(SYNC_ID_HEADER, "")
        sync_id = int(raw_sync_id) if raw_sync_id.isdigit() and len(raw_sync_id) < 4 else None
        self._refuse_if_locked_out(sync_id, address)
        try:
            return (SyncCaller(self._check(request, sync_id)), None)
        except SyncAPIError as error:
            if error.get_codes() != "token_expired":
                AuthFailure.objects.create(sync_id=sync_id, address=address)
            raise

    def _check(self, request: Request, sync_id: int | None) -> SyncPeer:
        if sync_id is None:
            raise _failed(
                f"The request has no valid {SYNC_ID_HEADER} header: send this satellite's Sync ID.",
                "sync_id_missing",
            )
        preferences = preferences_get()
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            self._check_token(credentials, sync_id, preferences)
        elif scheme.lower() == "basic":
            self._check_password(credentials, preferences)
        else:
            raise _failed("Send the sync user name and password.", "credentials_missing")
        peer = SyncPeer.objects.filter(sync_id=sync_id).first()
        if peer is None:
            raise _failed(
                f"Sync ID {sync_id} is not in the master's Sync with list: add this satellite "
                "there (Preferences > Synchronisation on the master).",
                "unknown_sync_id",
            )
        return peer

    def _check_password(self, credentials: str, preferences: SyncPreferences) -> None:
        try:
            username, _, password = base64.b64decode(credentials).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            username, password = "", ""
        if not (
            constant_time_compare(username, preferences.username)
            and preferences.check_password(password)
        ):
            raise _failed(
                "The master refused the password (or the sync user name): check Preferences > "
                "Synchronisation on both servers; they must be the same.",
                "wrong_credentials",
            )

    def _check_token(self, token: str, sync_id: int, preferences: SyncPreferences) -> None:
        try:
            claims = signing.loads(
                token, salt=TOKEN_SALT, max_age=settings.SYNC_TOKEN_MAX_AGE_SECONDS
            )
        except signing.SignatureExpired:
            raise _failed("The sync token has expired: log in again.", "token_expired") from None
        except signing.BadSignature:
            raise _failed("The sync token is not valid: log in again.", "token_invalid") from None
        if claims.get("sync_id") != sync_id or not constant_time_compare(
            claims.get("key", ""), _credentials_key(preferences)
        ):
            raise _failed(
                "The sync token no longer matches the master's credentials: log in again.",
                "token_invalid",
            )

    def _refuse_if_locked_out(self, sync_id: int | None, address: str | None) -> None:
        window = timedelta(seconds=settings.SYNC_AUTH_LOCKOUT_SECONDS)
        who = Q(address=address) if address else Q()
        if sync_id is not None:
            who |= Q(sync_id=sync_id)
        failures = list(
            AuthFailure.objects.filter(who, failed_at__gte=timezone.now() - window)
            .order_by("-failed_at")
            .values_list("failed_at", flat=True)[: settings.SYNC_AUTH_MAX_FAILURES]
        )
        if len(failures) >= settings.SYNC_AUTH_MAX_FAILURES:
            until = timezone.localtime(failures[0] + window)
            raise SyncAPIError(
                f"Too many failed sync logins from this satellite or address. Try again after "
                f"{until:%H:%M}, and first check the sync user name and password in Preferences "
                "> Synchronisation on both servers.",
                "locked_out",
                status.HTTP_429_TOO_MANY_REQUESTS,
                retry_after_seconds=int((failures[0] + window - timezone.now()).total_seconds()),
            )
