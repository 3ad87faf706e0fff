"""A customer invoice with a negative line, saved and finalised in the admin in a real chromium."""

import datetime
import re
from collections.abc import Iterator
from typing import Any

import pytest

from stores.models import Item, StockLine, Store, Transaction
from tests.factories import (
    ItemFactory,
    StockLineFactory,
    StoreFactory,
    TransactionFactory,
    TransactionLineFactory,
    UserFactory,
)

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "demo-password-1"
EXPIRY = datetime.date(2028, 6, 30)
REFUSAL = (
    "Invoice quantities must be positive: AMX Amoxicillin 250 mg batch B1 has -5. "
    "Use an inventory adjustment to reduce stock."
)


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    """A superuser's admin session on the live server."""
    user = UserFactory(username="clerk", is_superuser=True)
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    yield page
    context.close()


@pytest.fixture
def stocked() -> tuple[Store, Item]:
    """Store S001 holding 10 of AMX batch B1."""
    store = StoreFactory(code="S001", name="Northern Warehouse")
    item = ItemFactory(code="AMX", name="Amoxicillin 250 mg")
    StockLineFactory(store=store, item=item, batch="B1", expiry=EXPIRY, quantity=10)
    return store, item


def choose_item(page: Page, search: str) -> None:
    """Pick an item in the first line's autocomplete."""
    page.locator("#lines-0 .field-item .select2-selection").click()
    page.locator(".select2-search__field").fill(search)
    page.locator(".select2-results__option", has_text=search).click()


def test_a_negative_customer_invoice_line_is_refused_on_save_and_on_finalise(
    page: Page, stocked: tuple[Store, Item]
) -> None:
    store, item = stocked
    page.goto("/admin/stores/transaction/add/")
    page.select_option("#id_store", label=str(store))
    page.select_option("#id_kind", value=Transaction.Kind.CUSTOMER_INVOICE)
    page.fill("#id_date", "2026-11-01")
    choose_item(page, "AMX")
    page.fill("#id_lines-0-batch", "B1")
    page.fill("#id_lines-0-expiry", EXPIRY.isoformat())
    page.fill("#id_lines-0-quantity", "-5")
    with page.expect_navigation():
        page.locator("input[name=_save]").click()

    expect(page.locator(".errornote")).to_be_visible()
    expect(page.locator("#lines-group .errorlist.nonform")).to_have_text(REFUSAL)
    assert not Transaction.objects.exists()

    # A draft that reached the database some other way is refused when finalised.
    draft = TransactionFactory(store=store, kind=Transaction.Kind.CUSTOMER_INVOICE)
    TransactionLineFactory(transaction=draft, item=item, batch="B1", expiry=EXPIRY, quantity=-5)
    page.goto("/admin/stores/transaction/")
    page.locator(f"input[name=_selected_action][value='{draft.pk}']").check()
    page.select_option("select[name=action]", value="finalise")
    with page.expect_navigation():
        page.locator("button[name=index]").click()

    expect(page.locator(".messagelist li.error")).to_have_text(REFUSAL)
    expect(page.locator(".messagelist")).to_contain_text("Finalised 0 transaction(s).")
    assert Transaction.objects.get().status == Transaction.Status.DRAFT
    assert StockLine.objects.get().quantity == 10
