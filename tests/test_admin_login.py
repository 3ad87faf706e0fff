"""The admin login locks a user name out from one address after five wrong passwords (axes)."""

import base64

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client
from pytest_django.fixtures import Settings

from sync.protocol import API_PREFIX, PROTOCOL_VERSION
from sync.services import preferences_update
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "demo-password-1"
ATTACKER = "203.0.113.7"
ADMIN_AT_WORK = "198.51.100.20"


def log_in(username: str, password: str, address: str, **headers: str) -> tuple[int, str]:
    """Post the admin login form from `address`; returns the status and the page or redirect."""
    response = Client(REMOTE_ADDR=address, **headers).post(
        LOGIN, {"username": username, "password": password}
    )
    return response.status_code, response.get("Location") or response.content.decode()


def fail_five_times(username: str, address: str, **headers: str) -> None:
    """Four wrong passwords are refused as such; the fifth locks the user name out."""
    for _ in range(4):
        status, page = log_in(username, "wrong", address, **headers)
        assert status == 200
        assert "Please enter the correct username and password" in page
    assert_locked_out(*log_in(username, "wrong", address, **headers))


def assert_locked_out(status: int, page: str) -> None:
    assert status == 429
    assert "Too many wrong passwords for" in page
    assert "0:15:00" in page
    assert "axes_reset_username" in page


def test_five_wrong_passwords_lock_the_user_out_from_that_address_even_with_the_right_one() -> None:
    admin = UserFactory(username="admin", is_superuser=True)
    fail_five_times(admin.username, ATTACKER)

    assert_locked_out(*log_in(admin.username, PASSWORD, ATTACKER))
    assert log_in(admin.username, PASSWORD, ADMIN_AT_WORK) == (302, "/admin/")


def test_a_lockout_is_per_user_name_and_a_right_password_resets_the_count() -> None:
    admin, clerk = UserFactory(username="admin"), UserFactory(username="clerk")
    for _ in range(4):
        log_in(admin.username, "wrong", ATTACKER)
    assert log_in(admin.username, PASSWORD, ATTACKER) == (302, "/admin/")
    fail_five_times(clerk.username, ATTACKER)

    assert log_in(admin.username, "wrong", ATTACKER)[0] == 200
    assert log_in(admin.username, PASSWORD, ATTACKER) == (302, "/admin/")
    assert_locked_out(*log_in(clerk.username, PASSWORD, ATTACKER))


def test_axes_reset_username_clears_the_lockout() -> None:
    admin = UserFactory(username="admin")
    fail_five_times(admin.username, ATTACKER)

    call_command("axes_reset_username", admin.username)

    assert log_in(admin.username, PASSWORD, ATTACKER) == (302, "/admin/")


def test_behind_a_trusted_proxy_the_lockout_counts_the_forwarded_client(
    settings: Settings,
) -> None:
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    admin = UserFactory(username="admin")
    fail_five_times(admin.username, "127.0.0.1", HTTP_X_FORWARDED_FOR=ATTACKER)

    assert_locked_out(*log_in(admin.username, PASSWORD, "127.0.0.1", HTTP_X_FORWARDED_FOR=ATTACKER))
    assert log_in(admin.username, PASSWORD, "127.0.0.1", HTTP_X_FORWARDED_FOR=ADMIN_AT_WORK) == (
        302,
        "/admin/",
    )
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ATTACKER}


def test_sync_api_failures_are_not_counted_as_admin_logins() -> None:
    preferences_update(sync_id=1, username="sync", password="pw")
    basic = base64.b64encode(b"sync:wrong").decode()
    client = Client(
        HTTP_X_SYNC_ID="2",
        HTTP_X_SYNC_PROTOCOL=str(PROTOCOL_VERSION),
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )
    for _ in range(6):
        response = client.post(
            f"{API_PREFIX}handshake/",
            {"sync_id": 2, "protocol_version": PROTOCOL_VERSION},
            content_type="application/json",
        )
        assert response.status_code in (401, 429)

    assert not AccessAttempt.objects.exists()
