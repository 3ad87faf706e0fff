"""Satellite identity on the master: enrolment, keys, tokens, resets, disabling and lockouts."""

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.hashers import PBKDF2PasswordHasher, check_password, make_password
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from sync.admin import UNLOCK_SESSION_KEY
from sync.auth import RememberedPasswords
from sync.keys import key_hash, peer_enabled_set, peer_key_reset
from sync.models import AuthFailure, PeerState, SyncPeer
from sync.protocol import PROTOCOL_VERSION
from sync.services import peer_save, preferences_update
from tests.factories import StoreFactory
from tests.sync.test_protocol import (
    HANDSHAKE,
    PASSWORD,
    PULL,
    PUSH,
    assert_error,
    credentials,
    enrol,
)

pytestmark = pytest.mark.django_db

GUESSER = "198.51.100.7"


@pytest.fixture
def sites() -> None:
    """This site as the master of satellites 2 (store S002) and 3 (S003)."""
    preferences_update(sync_id=1, username="sync", password=PASSWORD)
    for sync_id, name in [(2, "A"), (3, "B")]:
        StoreFactory(code=f"S00{sync_id}")
        peer = SyncPeer(
            sync_id=sync_id, name=name, store_code=f"S00{sync_id}", url="http://127.0.0.1:9/"
        )
        peer_save(peer=peer)


@pytest.fixture
def keeper() -> User:
    user = User.objects.create_user("keeper", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["manage_peer_keys", "view_syncpeer", "change_syncpeer"]
        )
    )
    return User.objects.get(pk=user.pk)


def caller(address: str = "127.0.0.1", forwarded: str = "", **headers: Any) -> APIClient:
    """An API client at `address` (behind proxies, if `forwarded`) with one credential."""
    client = APIClient(REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=forwarded)
    client.credentials(**credentials(**headers))
    return client


def shake(client: APIClient, sync_id: int = 2) -> Any:
    return client.post(
        HANDSHAKE, {"sync_id": sync_id, "protocol_version": PROTOCOL_VERSION}, format="json"
    )


def token_of(key: str, sync_id: int = 2) -> str:
    answer = shake(caller(sync_id=sync_id, key=key), sync_id)
    assert answer.status_code == 200
    return str(answer.json()["token"])


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "credentials_missing"),
        ({"sync_id": None, "password": PASSWORD}, 401, "sync_id_missing"),
        ({"password": "wrong"}, 401, "wrong_credentials"),
        ({"password": PASSWORD, "username": "other"}, 401, "wrong_credentials"),
        ({"sync_id": 7, "password": PASSWORD}, 401, "unknown_sync_id"),
        ({"key": "not-a-key"}, 401, "not_enrolled"),
        ({"token": "forged"}, 401, "token_invalid"),
    ],
    ids=[
        "nothing",
        "no-sync-id",
        "wrong-password",
        "wrong-user-name",
        "unknown-sync-id",
        "key-unenrolled",
        "forged-token",
    ],
)
def test_refused_callers_get_the_reason(
    sites: None, headers: dict[str, Any], status: int, code: str
) -> None:
    assert_error(shake(caller(**headers)), status, code)


def test_the_shared_password_enrols_once_and_alone_is_refused_after(sites: None) -> None:
    enrolment = shake(caller(password=PASSWORD))
    assert enrolment.status_code == 200
    key = enrolment.json()["key"]
    assert enrolment.json()["token"] == ""
    assert len(key) >= 43  # 256 bits, URL-safe base64
    # The password is for enrolling only: push and pull need the key.
    assert_error(caller(password=PASSWORD).get(PULL), 401, "key_required")
    token = token_of(key)
    assert caller(token=token).get(PULL).status_code == 200
    peer = SyncPeer.objects.get(sync_id=2)
    assert (peer.key_hash, peer.pending_key_hash) == (key_hash(key), "")
    assert key not in str(SyncPeer.objects.filter(sync_id=2).values().get())
    body = assert_error(shake(caller(password=PASSWORD)), 409, "identity_mismatch")
    assert "already held by another server" in body["message"]
    assert "sync_key reset --sync-id 2" in body["message"]
    assert SyncPeer.objects.get(sync_id=2).key_hash == key_hash(key)
    assert not AuthFailure.objects.exists()


def test_an_enrolment_answer_lost_on_the_way_is_replaced_by_the_next(sites: None) -> None:
    lost = shake(caller(password=PASSWORD)).json()["key"]
    kept = shake(caller(password=PASSWORD)).json()["key"]
    assert_error(shake(caller(key=lost)), 401, "key_invalid")
    assert shake(caller(key=kept)).status_code == 200
    assert_error(shake(caller(key=lost)), 401, "key_invalid")


def test_satellite_2s_key_and_token_are_refused_as_sync_id_3(sites: None) -> None:
    key_2, key_3 = enrol(2), enrol(3)
    token_2 = token_of(key_2)
    before = PeerState.objects.filter(peer__sync_id=3).values().get()
    for number, endpoint in enumerate(["handshake", "push", "pull"]):
        # One address per endpoint, so that its two guesses stay short of a lockout.
        address = f"192.0.2.{number}"
        for client, code in [
            (caller(address, sync_id=3, key=key_2), "key_invalid"),
            (caller(address, sync_id=3, token=token_2), "token_invalid"),
            (caller(address, sync_id=3, password=PASSWORD), "identity_mismatch"),
        ]:
            if endpoint == "handshake":
                answer = shake(client, 3)
            elif endpoint == "push":
                answer = client.post(PUSH, {"batch_id": "x", "changes": {}}, format="json")
            else:
                answer = client.get(PULL, {"cursor": "999999999.999999999"})
            assert answer.json()["code"] == code, (endpoint, answer.json())
            assert answer.status_code in (401, 409)
    after = PeerState.objects.filter(peer__sync_id=3).values().get()
    assert after == before
    assert caller(sync_id=3, key=key_3).get(PULL).status_code == 200


def test_reset_revokes_one_satellite_which_enrols_again(sites: None, keeper: User) -> None:
    key_2, key_3 = enrol(2), enrol(3)
    token_2 = token_of(key_2)
    peer_key_reset(sync_id=2, user=keeper)
    assert_error(shake(caller(key=key_2)), 401, "not_enrolled")
    # A stale token is no guess: it never counts towards a lockout.
    assert_error(caller(token=token_2).get(PULL), 401, "token_stale")
    assert caller(sync_id=3, key=key_3).get(PULL).status_code == 200
    new_key = enrol(2)
    assert new_key != key_2
    assert caller(key=new_key).get(PULL).status_code == 200
    assert_error(shake(caller(key=key_2)), 401, "key_invalid")
    entry = LogEntry.objects.get(object_id=str(SyncPeer.objects.get(sync_id=2).pk))
    assert (entry.user, "Reset the sync key" in entry.get_change_message()) == (keeper, True)


def test_only_a_user_with_the_key_permission_resets_or_disables(sites: None) -> None:
    enrol(2)
    clerk = User.objects.create_user("clerk", is_staff=True)
    with pytest.raises(PermissionDenied):
        peer_key_reset(sync_id=2, user=clerk)
    with pytest.raises(PermissionDenied):
        peer_enabled_set(sync_id=2, enabled=False, user=clerk)
    peer = SyncPeer.objects.get(sync_id=2)
    assert (bool(peer.key_hash), peer.enabled) == (True, True)
    assert not LogEntry.objects.exists()


def test_a_disabled_satellite_is_refused_plainly_until_enabled(sites: None, keeper: User) -> None:
    key = enrol(2)
    token = token_of(key)
    peer_enabled_set(sync_id=2, enabled=False, user=keeper)
    for client in (caller(key=key), caller(token=token)):
        body = assert_error(client.get(PULL), 403, "satellite_disabled")
        assert "disabled satellite 2" in body["message"]
    peer_enabled_set(sync_id=2, enabled=True, user=keeper)
    assert caller(key=key).get(PULL).status_code == 200


def test_failures_lock_out_their_address_only_and_never_a_valid_key(sites: None) -> None:
    key = enrol(2)
    token = token_of(key)
    for _ in range(5):
        assert_error(shake(caller(GUESSER, sync_id=2, password="guess")), 401, "wrong_credentials")
    body = assert_error(shake(caller(GUESSER, password=PASSWORD, sync_id=3), 3), 429, "locked_out")
    assert body["retry_after_seconds"] > 0
    assert_error(shake(caller(GUESSER, key="guess")), 429, "locked_out")
    # Satellite 2, named by every guess, syncs on: from its own address, and even from the
    # guesser's, because it presents its key or token.
    assert caller(key=key).get(PULL).status_code == 200
    assert caller(GUESSER, key=key).get(PULL).status_code == 200
    assert caller(GUESSER, token=token).get(PULL).status_code == 200
    assert shake(caller("127.0.0.1", sync_id=3, password=PASSWORD), 3).status_code == 200
    assert set(AuthFailure.objects.values_list("address", "sync_id", "code")) == {
        (GUESSER, 2, "wrong_credentials"),
        (GUESSER, 2, "key_invalid"),
    }


def test_a_lockout_ends_after_its_window(sites: None, settings: Settings) -> None:
    for _ in range(5):
        shake(caller(GUESSER, password="guess"))
    AuthFailure.objects.update(
        failed_at=timezone.now() - timedelta(seconds=settings.SYNC_AUTH_LOCKOUT_SECONDS + 1)
    )
    assert shake(caller(GUESSER, password=PASSWORD)).status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_address_is_locked_out(
    sites: None, settings: Settings
) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    proxy = "10.1.2.3"
    for _ in range(5):
        shake(caller(proxy, password="guess", forwarded="203.0.113.5"))
    locked = caller(proxy, password=PASSWORD, forwarded="spoofed, 203.0.113.5")
    assert_error(shake(locked), 429, "locked_out")
    other = caller(proxy, password=PASSWORD, forwarded="203.0.113.6")
    assert shake(other).status_code == 200
    assert set(AuthFailure.objects.values_list("address", flat=True)) == {"203.0.113.5"}


def test_a_forwarded_address_from_an_untrusted_caller_is_ignored(sites: None) -> None:
    for _ in range(5):
        shake(caller(GUESSER, password="guess", forwarded="203.0.113.9"))
    assert set(AuthFailure.objects.values_list("address", flat=True)) == {GUESSER}
    assert_error(shake(caller(GUESSER, password=PASSWORD)), 429, "locked_out")


def test_an_expired_token_is_no_failed_login(sites: None, settings: Settings) -> None:
    token = token_of(enrol(2))
    settings.SYNC_TOKEN_MAX_AGE_SECONDS = -1
    assert_error(caller(token=token).get(PULL), 401, "token_expired")
    assert not AuthFailure.objects.exists()


class CountingHasher(PBKDF2PasswordHasher):
    """The default hasher, counting how often a password is checked against it."""

    checks = 0

    def verify(self, password: str, encoded: str) -> bool:
        CountingHasher.checks += 1
        return super().verify(password, encoded)


def test_a_wrong_user_name_runs_the_password_hash_too(sites: None, settings: Settings) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    CountingHasher.checks = 0
    assert_error(shake(caller(password=PASSWORD, username="nobody")), 401, "wrong_credentials")
    assert CountingHasher.checks == 1


def test_an_enrolment_storm_pays_the_slow_hash_once_and_a_wrong_guess_always(
    sites: None, settings: Settings
) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    preferences_update(password=PASSWORD)
    CountingHasher.checks = 0
    for sync_id in (2, 3):
        assert shake(caller(sync_id=sync_id, password=PASSWORD), sync_id).status_code == 200
    assert CountingHasher.checks == 1
    assert_error(shake(caller(password="wrong")), 401, "wrong_credentials")
    assert_error(shake(caller(password=PASSWORD, username="nobody")), 401, "wrong_credentials")
    assert CountingHasher.checks == 3
    # A new password forgets the old one at once: it is refused, and only the new one enrols.
    preferences_update(password="the-new-one")
    assert_error(shake(caller(password=PASSWORD)), 401, "wrong_credentials")
    assert shake(caller(password="the-new-one")).status_code == 200
    assert CountingHasher.checks == 5


def test_a_storm_of_simultaneous_enrolments_hashes_once_and_wrong_guesses_each_time() -> None:
    stored = make_password(PASSWORD)
    remembered = RememberedPasswords()
    hashed: list[str] = []

    def enrol_at_once(password: str) -> list[bool]:
        start = threading.Barrier(8)

        def one() -> bool:
            def slow() -> bool:
                hashed.append(password)
                return check_password(password, stored)

            start.wait()
            return remembered.check(stored, "sync", password, slow)

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda _: one(), range(8)))

    assert enrol_at_once(PASSWORD) == [True] * 8
    assert hashed == [PASSWORD]
    assert enrol_at_once("guess") == [False] * 8
    assert hashed.count("guess") == 8
    # Another user name with the right password is another pair: it is hashed, and refused.
    assert not remembered.check(stored, "other", PASSWORD, lambda: False)


def test_sync_key_command_issues_resets_and_disables_with_the_users_name(
    sites: None, keeper: User
) -> None:
    out = io.StringIO()
    call_command("sync_key", "issue", "--sync-id", "3", "--user", "keeper", stdout=out)
    key = out.getvalue().splitlines()[0]
    assert caller(sync_id=3, key=key).get(PULL).status_code == 200
    call_command("sync_key", "list", stdout=out)
    assert "3\tB\tenrolled" in out.getvalue()
    with pytest.raises(CommandError, match="reset its key first"):
        call_command("sync_key", "issue", "--sync-id", "3", "--user", "keeper", stdout=out)
    call_command("sync_key", "disable", "--sync-id", "3", "--user", "keeper", stdout=out)
    assert_error(caller(sync_id=3, key=key).get(PULL), 403, "satellite_disabled")
    call_command("sync_key", "reset", "--sync-id", "3", "--user", "keeper", stdout=out)
    out = io.StringIO()
    call_command("sync_key", "list", stdout=out)
    assert "3\tB\tnot enrolled; disabled" in out.getvalue()
    assert LogEntry.objects.filter(user=keeper).count() == 3
    with pytest.raises(CommandError, match="needs --sync-id and --user"):
        call_command("sync_key", "reset", "--sync-id", "3")
    User.objects.create_user("clerk")
    with pytest.raises(CommandError, match="manage_peer_keys"):
        call_command("sync_key", "reset", "--sync-id", "3", "--user", "clerk")


def test_admin_reset_key_needs_the_unlock_and_the_permission(
    sites: None, keeper: User, client: Client
) -> None:
    key = enrol(2)
    peer = SyncPeer.objects.get(sync_id=2)
    client.force_login(keeper)
    changelist = reverse("admin:sync_syncpeer_changelist")
    reset = reverse("admin:sync_syncpeer_reset_key", args=[peer.pk])
    page = client.get(changelist).content.decode()
    assert "enrolled" in page
    assert "Reset key" not in page
    assert client.post(reset).status_code == 403
    session = client.session
    session[UNLOCK_SESSION_KEY] = (timezone.now() + timedelta(minutes=5)).isoformat()
    session.save()
    assert "Reset key" in client.get(changelist).content.decode()
    assert client.post(reset).status_code == 302
    assert_error(shake(caller(key=key)), 401, "not_enrolled")
    enabled = reverse("admin:sync_syncpeer_enabled", args=[peer.pk])
    assert client.post(enabled).status_code == 302
    assert SyncPeer.objects.get(sync_id=2).enabled is False
    messages = [entry.get_change_message() for entry in LogEntry.objects.filter(user=keeper)]
    assert len(messages) == 2
