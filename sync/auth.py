"""Authentication of satellites on the master: Sync ID and key, a run token, or enrolment.

Three credentials, by the Authorization header's scheme:
- `Basic` user name and password: the shared enrolment credential of the seed document. It
  authenticates only a handshake of a Sync ID that has no key yet, which gets one (sync.keys).
- `Key`: the satellite's own key, for its handshake.
- `Bearer`: the run token a handshake issued, bound to the Sync ID and its key.

Failed guesses are counted per real client address (msupply.addresses), never per claimed Sync
ID, so nobody can lock a satellite out by naming it; and a caller that presents a valid key or
token is let in even from an address that is locked out.
"""

import base64
import binascii
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core import signing
from django.http import HttpRequest
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from msupply.addresses import client_address

from .display import local_time_text
from .errors import ErrorCode, SyncError
from .keys import key_hash, peer_key_confirm
from .models import AuthFailure, SyncPeer, SyncPreferences
from .protocol import SYNC_ID_HEADER
from .selectors import preferences_get

TOKEN_SALT = "msupply.sync.token"  # noqa: S105 - a signing namespace, not a secret
PASSWORD_SALT = "msupply.sync.enrolment"  # noqa: S105 - a signing namespace, not a secret
# How long this process trusts a user name and password that passed the slow hash.
PASSWORD_REMEMBER_SECONDS = 10 * 60
RESET_HINT = (
    "The master's administrator can reset this Sync ID's key (Sync with > the satellite > Reset "
    "key, or `manage.py sync_key reset --sync-id {sync_id}` on the master); then enter the "
    "shared sync password on the satellite again."
)


@dataclass(frozen=True)
class SyncCaller:
    """The satellite making a request, once authenticated; `enrolling` if by the password."""

    peer: SyncPeer
    enrolling: bool = False
    is_authenticated: bool = True

    @property
    def sync_id(self) -> int:
        return self.peer.sync_id


class AuthRefused(SyncError):
    """A refused credential; `guess` if it counts towards the caller's address lockout."""

    def __init__(self, code: str, message: str, *, guess: bool, status: int | None = None) -> None:
        super().__init__(code, message, status=status)
        self.guess = guess


def _key_fingerprint(peer: SyncPeer) -> str:
    # A new key changes this, which revokes every token issued for the old one.
    return salted_hmac(TOKEN_SALT, f"{peer.sync_id}:{peer.key_hash}").hexdigest()


def token_issue(*, peer: SyncPeer) -> str:
    """A signed token that lets `peer` skip the key check for a while."""
    return signing.dumps({"sync_id": peer.sync_id, "key": _key_fingerprint(peer)}, salt=TOKEN_SALT)


def sync_id_of(request: Request | HttpRequest) -> int | None:
    """The Sync ID the caller claims in its header, if it is a number at all."""
    raw = request.headers.get(SYNC_ID_HEADER, "")
    return int(raw) if raw.isdigit() and len(raw) < 4 else None


class SyncAuthentication(BaseAuthentication):
    """Authenticates a satellite by key, token or enrolment password; locks out guessers."""

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="msupply-sync"'

    def authenticate(self, request: Request) -> tuple[SyncCaller, None]:
        address = client_address(request)
        sync_id = sync_id_of(request)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        scheme = scheme.lower()
        # A key or token is never locked out, so its address is looked up only when refused.
        locked_until = None
        if scheme not in ("key", "bearer"):
            locked_until = _locked_until(address)
            if locked_until is not None:
                # A password is not even checked: guessing on during a lockout tells nothing.
                raise _locked_out(locked_until)
        try:
            caller = self._check(scheme, credentials.strip(), sync_id)
        except AuthRefused as refusal:
            if scheme in ("key", "bearer"):
                locked_until = _locked_until(address)
            if refusal.guess:
                AuthFailure.objects.create(sync_id=sync_id, address=address, code=refusal.code)
            if locked_until is not None:
                raise _locked_out(locked_until) from refusal
            raise
        if not caller.peer.enabled:
            raise SyncError(
                ErrorCode.SATELLITE_DISABLED,
                f"The master's administrator has disabled satellite {caller.sync_id}: it may "
                "not synchronise until they enable it again (Sync with on the master).",
            )
        return (caller, None)

    def _check(self, scheme: str, credentials: str, sync_id: int | None) -> SyncCaller:
        if sync_id is None:
            raise AuthRefused(
                ErrorCode.SYNC_ID_MISSING,
                f"The request has no valid {SYNC_ID_HEADER} header: send this satellite's Sync ID.",
                guess=True,
            )
        if scheme == "basic":
            return self._check_password(credentials, sync_id)
        if scheme == "key":
            return self._check_key(credentials, sync_id)
        if scheme == "bearer":
            return self._check_token(credentials, sync_id)
        raise AuthRefused(
            ErrorCode.CREDENTIALS_MISSING,
            "Send this satellite's key, or the sync user name and password to enrol it.",
            guess=False,
        )

    def _check_password(self, credentials: str, sync_id: int) -> SyncCaller:
        try:
            username, _, password = base64.b64decode(credentials).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            username, password = "", ""
        preferences = preferences_get()
        if not _enrolment_credentials_match(preferences, username, password):
            raise AuthRefused(
                ErrorCode.WRONG_CREDENTIALS,
                "The master refused the password (or the sync user name): check Preferences > "
                "Synchronisation on both servers; they must be the same.",
                guess=True,
            )
        peer = _peer(sync_id, guess=False)
        if peer.key_hash:
            raise AuthRefused(
                ErrorCode.IDENTITY_MISMATCH,
                f"Sync ID {sync_id} is already held by another server, which enrolled with the "
                "master; the shared password alone cannot take it over. If this server replaces "
                "that one, or its key was lost: " + RESET_HINT.format(sync_id=sync_id),
                guess=False,
            )
        return SyncCaller(peer, enrolling=True)

    def _check_key(self, key: str, sync_id: int) -> SyncCaller:
        peer = _peer(sync_id, guess=True)
        presented = key_hash(key)
        if peer.key_hash and constant_time_compare(presented, peer.key_hash):
            return SyncCaller(peer)
        if (
            peer.pending_key_hash
            and constant_time_compare(presented, peer.pending_key_hash)
            and peer_key_confirm(peer=peer)
        ):
            return SyncCaller(peer)
        if not (peer.key_hash or peer.pending_key_hash):
            raise AuthRefused(
                ErrorCode.NOT_ENROLLED,
                f"Sync ID {sync_id} holds no key on the master (its administrator reset it, or "
                "it never enrolled): enter the shared sync password in Preferences > "
                "Synchronisation on this satellite, and it enrols at its next sync.",
                guess=False,
            )
        raise AuthRefused(
            ErrorCode.KEY_INVALID,
            f"The master refused this satellite's key for Sync ID {sync_id}: another server "
            "holds that Sync ID, or this key was replaced. " + RESET_HINT.format(sync_id=sync_id),
            guess=True,
        )

    def _check_token(self, token: str, sync_id: int) -> SyncCaller:
        try:
            claims = signing.loads(
                token, salt=TOKEN_SALT, max_age=settings.SYNC_TOKEN_MAX_AGE_SECONDS
            )
        except signing.SignatureExpired:
            raise AuthRefused(
                ErrorCode.TOKEN_EXPIRED,
                "The sync token has expired: log in again with the key.",
                guess=False,
            ) from None
        except signing.BadSignature:
            raise AuthRefused(
                ErrorCode.TOKEN_INVALID,
                "The sync token is not one this master issued: log in again with the key.",
                guess=True,
            ) from None
        if claims.get("sync_id") != sync_id:
            raise AuthRefused(
                ErrorCode.TOKEN_INVALID,
                f"The sync token was issued to another Sync ID than {sync_id}.",
                guess=True,
            )
        peer = _peer(sync_id, guess=False)
        if not constant_time_compare(str(claims.get("key", "")), _key_fingerprint(peer)):
            raise AuthRefused(
                ErrorCode.TOKEN_STALE,
                "The sync token belongs to a key the master has since replaced: log in again.",
                guess=False,
            )
        return SyncCaller(peer)


class RememberedPasswords:
    """User name and password pairs that passed the slow hash lately, kept as keyed hashes.

    An enrolment storm (a fleet of new satellites at once) then costs one slow hash per server
    process, not one per satellite: the first request of a pair hashes while the others with
    the same pair wait for its verdict. Anything else, a wrong guess included, still pays in
    full. The key includes the stored hash, so a new password forgets the old one at once.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._checking: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def check(
        self, password_hash: str, username: str, password: str, slow: Callable[[], bool]
    ) -> bool:
        """Whether the pair matches: remembered, or else by `slow`, once at a time per pair."""
        digest = salted_hmac(PASSWORD_SALT, f"{password_hash}\0{username}\0{password}").hexdigest()
        if self._holds(digest):
            return True
        with self._lock:
            checking = self._checking.setdefault(digest, threading.Lock())
        with checking:
            if self._holds(digest):
                return True
            matched = slow()
            now = time.monotonic()
            with self._lock:
                self._checking.pop(digest, None)
                if matched:
                    self._until = {d: until for d, until in self._until.items() if until > now}
                    self._until[digest] = now + PASSWORD_REMEMBER_SECONDS
        return matched

    def _holds(self, digest: str) -> bool:
        return self._until.get(digest, 0.0) > time.monotonic()


remembered_passwords = RememberedPasswords()


def _enrolment_credentials_match(
    preferences: SyncPreferences, username: str, password: str
) -> bool:
    """Whether `username` and `password` are the shared sync credentials of the preferences."""

    def slow() -> bool:
        # The hash runs whatever the user name, so a wrong name takes as long as a wrong
        # password.
        right_password = False
        if preferences.password_hash:
            right_password = preferences.check_password(password)
        else:
            make_password(password)
        return constant_time_compare(username, preferences.username) and right_password

    if not preferences.password_hash:
        return slow()
    return remembered_passwords.check(preferences.password_hash, username, password, slow)


def _peer(sync_id: int, *, guess: bool) -> SyncPeer:
    peer = SyncPeer.objects.filter(sync_id=sync_id).first()
    if peer is None:
        raise AuthRefused(
            ErrorCode.UNKNOWN_SYNC_ID,
            f"Sync ID {sync_id} is not in the master's Sync with list: add this satellite "
            "there (Preferences > Synchronisation on the master).",
            guess=guess,
        )
    return peer


def _locked_until(address: str | None) -> datetime | None:
    """When `address` may try a password again, if it has failed too often lately."""
    if address is None:
        return None
    window = timedelta(seconds=settings.SYNC_AUTH_LOCKOUT_SECONDS)
    failures = list(
        AuthFailure.objects.filter(address=address, failed_at__gte=timezone.now() - window)
        .order_by("-failed_at")
        .values_list("failed_at", flat=True)[: settings.SYNC_AUTH_MAX_FAILURES]
    )
    if len(failures) < settings.SYNC_AUTH_MAX_FAILURES:
        return None
    return failures[0] + window


def _locked_out(until: datetime) -> SyncError:
    # The wire's English, with the zone named: the satellite may sit in another time zone.
    with translation.override("en"):
        when = local_time_text(until)
    return SyncError(
        ErrorCode.LOCKED_OUT,
        f"Too many failed sync logins from this address. Try again after "
        f"{when}, and first check the sync user name and password in "
        "Preferences > Synchronisation on both servers. A satellite that holds its key is not "
        "affected.",
        retry_after_seconds=max(int((until - timezone.now()).total_seconds()), 1),
    )
