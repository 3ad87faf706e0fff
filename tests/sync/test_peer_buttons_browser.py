"""The Sync now and Test connection buttons of a real satellite, pressed in a real chromium."""

import re
from collections.abc import Iterator

import pytest

from tests.servers import ROOT, Cluster, Site
from tests.sync.realsites import key_reset

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
from playwright.sync_api import Browser, Locator, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.servers]

ADMIN = "admin"
TRANSACTIONS = 20
SATELLITE_STORE = "S002"
PEERS_URL = "/admin/sync/syncpeer/"
OUTPUT = ROOT / "test-output"
# The result page refreshes every 2 s; a run on this small cluster ends well within this.
RUN_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and one satellite with a web server and a Celery worker on a filesystem broker.

    The satellite hosts store S002 and holds transactions the master has not received yet.
    """
    cluster = Cluster(tmp_path_factory.mktemp("peer-buttons"), satellites=1)
    try:
        cluster.provision()
        satellite = cluster.satellites[0]
        satellite.manage(
            "createsuperuser", "--noinput", "--username", ADMIN, "--email", "admin@example.org",
            env={"DJANGO_SUPERUSER_PASSWORD": ADMIN},
        )  # fmt: skip
        satellite.manage("sync_now")  # learns which store it hosts
        satellite.manage("seed_demo", "--transactions", str(TRANSACTIONS))
        satellite.use_broker()
        satellite.start()
        satellite.start_celery(beat=False)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def page(browser: Browser, cluster: Cluster) -> Iterator[Page]:
    """An admin session on the satellite, showing its Sync with list."""
    context = browser.new_context(base_url=cluster.satellites[0].url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"/admin/login/?next={PEERS_URL}")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", ADMIN)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(f"{PEERS_URL}$"))
    yield page
    context.close()


def master_row(page: Page) -> Locator:
    return page.locator("#result_list tbody tr").filter(
        has=page.locator("td.field-name", has_text=re.compile(r"^master$"))
    )


def press(page: Page, button: str) -> None:
    """Press a button on the master's row of the Sync with list and wait for the next page."""
    with page.expect_navigation():
        master_row(page).get_by_role("button", name=button).click()


def wait_for_run_end(page: Page) -> Locator:
    """Wait on the self-refreshing result page until the run has ended; returns its state."""
    state = page.locator("#sync-state")
    expect(state).to_have_attribute(
        "data-state", re.compile("^(success|failure)$"), timeout=RUN_TIMEOUT_MS
    )
    return state


def store_transactions(site: Site) -> int:
    rows = site.sql(
        "SELECT COUNT(*) FROM stores_transaction t JOIN stores_store s ON s.id = t.store_id "
        "WHERE s.code = 'S002'"
    )
    return int(rows[0][0])


def screenshot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)


def test_sync_now_sends_the_satellites_transactions_and_test_connection_names_the_store(
    page: Page, cluster: Cluster
) -> None:
    assert store_transactions(cluster.master) == 0
    expect(master_row(page)).to_have_count(1)
    screenshot(page, "peer-buttons.png")

    press(page, "Sync now")

    expect(page).to_have_url(re.compile(rf"{PEERS_URL}\d+/sync-now/[0-9a-f]{{32}}/$"))
    state = wait_for_run_end(page)
    expect(state).to_have_attribute("data-state", "success")
    expect(state).to_contain_text("Sync with master succeeded")
    screenshot(page, "peer-buttons-sync-success.png")
    assert store_transactions(cluster.master) == TRANSACTIONS
    runs = cluster.satellites[0].sql("SELECT trigger, result FROM sync_synclog")
    assert ("button", "success") in runs

    page.get_by_role("link", name="Back to Sync with").click()
    expect(master_row(page).locator("td.field-last_error")).to_have_text("-")
    press(page, "Test connection")

    expect(page).to_have_url(re.compile(f"{PEERS_URL}$"))
    message = page.locator(".messagelist li.success")
    expect(message).to_contain_text("Connected to the master")
    expect(message).to_contain_text(f"for store {SATELLITE_STORE}")


def test_wrong_password_shows_in_test_connection_and_on_the_sync_now_result_page(
    page: Page, cluster: Cluster
) -> None:
    satellite = cluster.satellites[0]
    # A satellite whose key the master has reset, set up again with a wrong password.
    key_reset(cluster.master, 2)
    satellite.manage("sync_config", "--password-stdin", stdin="wrong\n")
    try:
        press(page, "Test connection")

        expect(page).to_have_url(re.compile(f"{PEERS_URL}$"))
        error = page.locator(".messagelist li.error")
        expect(error).to_contain_text("Test connection failed")
        expect(error).to_contain_text("The master refused the password")
        assert page.locator(".messagelist li.success").count() == 0

        press(page, "Sync now")

        state = wait_for_run_end(page)
        expect(state).to_have_attribute("data-state", "failure")
        expect(state).to_contain_text("Sync with master failed")
        expect(state).to_contain_text("The master refused the password")
        screenshot(page, "peer-buttons-sync-failure.png")
        page.get_by_role("link", name="Back to Sync with").click()
        expect(master_row(page).locator("td.field-last_error")).to_contain_text(
            "refused the password"
        )
    finally:
        Cluster.configure(satellite, 2)
