"""The admin unlock flow of the synchronisation preferences, driven in a real chromium."""

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType

from sync.models import SyncPreferences, UnlockAttempt
from sync.services import preferences_update
from tests.factories import UserFactory

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "demo-password-1"
RIGHT_CODE = "right-code"
WRONG_CODE = "wrong-code"
SYNC_PASSWORD = "pw"
PREFERENCES_URL = "/admin/sync/syncpreferences/"
UNLOCK_URL = "/admin/sync/syncpreferences/unlock/"
PEERS_URL = "/admin/sync/syncpeer/"
EDITOR_PERMISSIONS = [
    "sync.view_syncpreferences",
    "sync.change_syncpreferences",
    "sync.view_syncpeer",
    "sync.add_syncpeer",
    "sync.delete_syncpeer",
    "sync.change_syncpeer",
]
LOCKED_TEXT = "These preferences are locked"


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(autouse=True)
def preferences(transactional_db: None) -> SyncPreferences:
    """A master whose preferences have an authorisation code, a user name and a password."""
    return preferences_update(unlock_code=RIGHT_CODE, username="sync", password=SYNC_PASSWORD)


@pytest.fixture
def editor(transactional_db: None) -> Any:
    """A staff user who may edit the preferences but not unlock them."""
    return UserFactory(username="editor", permissions=EDITOR_PERMISSIONS)


@pytest.fixture
def unlocker(transactional_db: None) -> Any:
    """A staff user who may also unlock the preferences."""
    return UserFactory(
        username="unlocker", permissions=[*EDITOR_PERMISSIONS, "sync.unlock_sync_preferences"]
    )


def log_in(page: Page, user: Any) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#user-tools")).to_contain_text(user.username)


def submit_code(page: Page, code: str) -> None:
    page.fill("#id_code", code)
    with page.expect_navigation():
        page.click("#unlock-ok")


def unlock(page: Page) -> None:
    page.goto(PREFERENCES_URL)
    page.click("#unlock-button")
    expect(page.locator("#unlock-form")).to_be_visible()
    submit_code(page, RIGHT_CODE)
    expect(page.locator("#lock-state")).to_contain_text("Unlocked until")


def submit_preferences(page: Page) -> None:
    """Press the preferences page's Save button."""
    with page.expect_navigation():
        page.locator("#syncpreferences_form input[name=_save]").click()


def stored() -> SyncPreferences:
    return SyncPreferences.objects.get()


def preferences_log(user: Any) -> list[LogEntry]:
    content_type = ContentType.objects.get_for_model(SyncPreferences)
    return list(
        LogEntry.objects.filter(user=user, content_type=content_type).order_by("action_time")
    )


def test_locked_page_shows_locked_fields_read_only_and_saves_the_interval(
    page: Page, editor: Any
) -> None:
    log_in(page, editor)
    page.goto(PREFERENCES_URL)

    expect(page.locator("#lock-state")).to_contain_text(LOCKED_TEXT)
    assert page.locator("input[name=sync_id]").count() == 0
    assert page.locator("input[name=username]").count() == 0
    expect(page.locator(".field-sync_id .readonly")).to_have_text("1")
    expect(page.locator(".field-username .readonly")).to_have_text("sync")
    interval = page.locator("input[name=sync_interval_minutes]")
    expect(interval).to_be_editable()
    expect(interval).to_have_value("10")

    interval.fill("25")
    submit_preferences(page)

    expect(page.locator(".messagelist")).to_contain_text("synchronisation preferences were saved")
    expect(page.locator("input[name=sync_interval_minutes]")).to_have_value("25")
    preferences = stored()
    assert preferences.sync_interval_minutes == 25
    assert (preferences.sync_id, preferences.username) == (1, "sync")
    assert preferences.check_unlock_code(RIGHT_CODE)
    assert preferences.check_password(SYNC_PASSWORD)


def test_user_without_unlock_permission_gets_no_button_and_a_403(page: Page, editor: Any) -> None:
    log_in(page, editor)
    page.goto(PREFERENCES_URL)
    expect(page.locator("#lock-state")).to_contain_text(LOCKED_TEXT)
    assert page.locator("#unlock-button").count() == 0

    response = page.goto(UNLOCK_URL)

    assert response is not None
    assert response.status == 403
    assert page.locator("#unlock-form").count() == 0
    assert not UnlockAttempt.objects.exists()


def test_wrong_code_is_refused_and_counted(page: Page, unlocker: Any) -> None:
    log_in(page, unlocker)
    page.goto(PREFERENCES_URL)
    page.click("#unlock-button")
    expect(page).to_have_url(re.compile(f"{UNLOCK_URL}$"))

    submit_code(page, WRONG_CODE)

    expect(page.locator("#unlock-form .errorlist")).to_contain_text(
        "That authorisation code is not right. 4 tries left"
    )
    expect(page.locator("#id_code")).to_have_value("")
    page.goto(PREFERENCES_URL)
    expect(page.locator("#lock-state")).to_contain_text(LOCKED_TEXT)
    assert page.locator("input[name=sync_id]").count() == 0
    attempts = list(UnlockAttempt.objects.filter(user=unlocker))
    assert [attempt.succeeded for attempt in attempts] == [False]
    messages = [entry.change_message for entry in preferences_log(unlocker)]
    assert messages == ["Wrong authorisation code (1 of 5)."]
    for entry in LogEntry.objects.all():
        for text in (entry.change_message, entry.get_change_message()):
            for secret in (WRONG_CODE, RIGHT_CODE, SYNC_PASSWORD, PASSWORD):
                assert secret not in text


def test_five_wrong_codes_lock_the_user_out_even_for_the_right_code(
    page: Page, unlocker: Any
) -> None:
    log_in(page, unlocker)
    page.goto(UNLOCK_URL)
    for tries_left in ("4 tries", "3 tries", "2 tries", "1 try"):
        submit_code(page, WRONG_CODE)
        expect(page.locator("#unlock-form .errorlist")).to_contain_text(f"{tries_left} left")
    submit_code(page, WRONG_CODE)
    expect(page.locator("#lockout")).to_contain_text("Too many wrong codes")
    expect(page.locator("#unlock-ok")).to_be_disabled()

    # The browser disables OK; a determined user re-enables it and sends the right code.
    page.locator("#unlock-ok").evaluate("button => { button.disabled = false; }")
    submit_code(page, RIGHT_CODE)

    expect(page.locator("#unlock-form .errorlist")).to_contain_text("Too many wrong codes")
    expect(page.locator("#lockout")).to_contain_text("Too many wrong codes")
    page.goto(PREFERENCES_URL)
    expect(page.locator("#lock-state")).to_contain_text(LOCKED_TEXT)
    assert page.locator("input[name=sync_id]").count() == 0
    assert UnlockAttempt.objects.filter(user=unlocker, succeeded=False).count() == 5
    assert not UnlockAttempt.objects.filter(succeeded=True).exists()
    messages = [entry.change_message for entry in preferences_log(unlocker)]
    assert messages == [
        *(f"Wrong authorisation code ({n} of 5)." for n in range(1, 6)),
        "Unlock refused: user is locked out.",
    ]


def test_right_code_unlocks_the_sync_id_user_name_and_sync_with_list(
    page: Page, unlocker: Any
) -> None:
    log_in(page, unlocker)
    page.goto(PEERS_URL)
    expect(page.locator("#content")).to_be_visible()
    assert page.locator("a.addlink").count() == 0

    unlock(page)

    expect(page.locator(".messagelist")).to_contain_text("unlocked until")
    sync_id = page.locator("input[name=sync_id]")
    expect(sync_id).to_be_editable()
    expect(sync_id).to_have_value("1")
    expect(page.locator("input[name=username]")).to_have_value("sync")
    expect(page.locator("input[name=new_password]")).to_have_value("")
    assert [a.succeeded for a in UnlockAttempt.objects.filter(user=unlocker)] == [True]
    assert [e.change_message for e in preferences_log(unlocker)] == [
        "Unlocked the synchronisation preferences."
    ]
    page.goto(PEERS_URL)
    expect(page.locator(".object-tools a.addlink")).to_have_attribute("href", f"{PEERS_URL}add/")

    page.goto(PREFERENCES_URL)
    page.fill("input[name=sync_id]", "3")
    page.fill("input[name=username]", "satellite-3")
    submit_preferences(page)
    # The master kept only the password's hash; a satellite must send it, so it is asked again.
    expect(page.locator(".field-new_password .errorlist")).to_contain_text("enter the password")
    assert stored().sync_id == 1

    page.fill("input[name=new_password]", "pw-3")
    submit_preferences(page)

    expect(page.locator(".messagelist")).to_contain_text("synchronisation preferences were saved")
    assert stored().check_password("pw-3")
    expect(page.locator("input[name=sync_id]")).to_have_value("3")
    preferences = stored()
    assert (preferences.sync_id, preferences.username) == (3, "satellite-3")
    assert preferences.sync_interval_minutes == 10
    assert preferences.check_unlock_code(RIGHT_CODE)
    assert preferences.password == "pw-3"

    page.click("#lock-button")
    expect(page.locator("#lock-state")).to_contain_text(LOCKED_TEXT)
    page.goto(PEERS_URL)
    expect(page.locator("#content")).to_be_visible()
    assert page.locator("a.addlink").count() == 0


def test_crafted_post_on_locked_page_changes_only_the_interval(page: Page, unlocker: Any) -> None:
    log_in(page, unlocker)
    page.goto(PREFERENCES_URL)
    expect(page.locator("#lock-state")).to_contain_text(LOCKED_TEXT)
    token = page.locator("#syncpreferences_form input[name=csrfmiddlewaretoken]").input_value()
    assert token

    result = page.evaluate(
        """async ([url, token]) => {
            const body = new URLSearchParams({
                csrfmiddlewaretoken: token,
                sync_id: "5",
                username: "hacker",
                sync_interval_minutes: "7",
                new_password: "hacked-password",
                new_unlock_code: "hacked-code",
                _save: "Save",
            });
            const response = await fetch(url, {method: "POST", body, credentials: "same-origin"});
            return {status: response.status, url: response.url, redirected: response.redirected};
        }""",
        [PREFERENCES_URL, token],
    )

    assert result["status"] == 200
    assert result["redirected"]
    preferences = stored()
    assert preferences.sync_interval_minutes == 7
    assert (preferences.sync_id, preferences.username) == (1, "sync")
    assert preferences.check_unlock_code(RIGHT_CODE)
    assert preferences.check_password(SYNC_PASSWORD)
    assert not preferences.check_unlock_code("hacked-code")


def test_unlock_expires_and_the_page_locks_again(page: Page, unlocker: Any, settings: Any) -> None:
    settings.SYNC_UNLOCK_SECONDS = 2
    log_in(page, unlocker)
    unlock(page)
    unlocked_by = time.monotonic()  # the server set the expiry before this moment
    page.fill("input[name=sync_id]", "4")

    time.sleep(max(0.0, unlocked_by + 2.5 - time.monotonic()))
    # The form was opened while unlocked; after expiry the server must ignore its Sync ID.
    submit_preferences(page)

    expect(page.locator(".messagelist")).to_contain_text("synchronisation preferences were saved")
    assert stored().sync_id == 1
    page.reload()
    expect(page.locator("#lock-state")).to_contain_text(LOCKED_TEXT)
    assert page.locator("input[name=sync_id]").count() == 0
    expect(page.locator("#unlock-button")).to_be_visible()
    page.goto(PEERS_URL)
    expect(page.locator("#content")).to_be_visible()
    assert page.locator("a.addlink").count() == 0


def test_preferences_page_has_a_save_button(page: Page, unlocker: Any) -> None:
    log_in(page, unlocker)
    page.goto(PREFERENCES_URL)
    expect(page.locator("#lock-state")).to_contain_text(LOCKED_TEXT)
    expect(page.locator("#syncpreferences_form input[name=_save]")).to_be_visible(timeout=2_000)

    unlock(page)

    expect(page.locator("#syncpreferences_form input[name=_save]")).to_be_visible(timeout=2_000)
