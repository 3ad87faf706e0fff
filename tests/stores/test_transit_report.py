"""Goods in transit: unreceived transfers' figures equal the database, filters, scope and CSV;
the transaction admin's transfer marks and its incoming-transfers filter."""

import csv
import datetime
import io
import re
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import F, Sum
from django.test import Client
from django.utils import timezone

from stores import services
from stores.models import Item, Store, Transaction, TransactionLine
from stores.reports import ReportScope, goods_in_transit, transit_staleness
from stores.services import LineInput
from stores.transfers import inbounds_make
from sync.models import SyncPeer
from sync.services import peer_save, preferences_update
from tests.factories import PeerStateFactory, UserFactory
from tests.stores.test_reports import page_table, short_date

pytestmark = pytest.mark.django_db

URL = "/reports/goods-in-transit/"
EXPIRY = datetime.date(2030, 1, 31)
MASTER = ReportScope(is_master=True)


def days_ago(days: int) -> datetime.date:
    return timezone.localdate() - datetime.timedelta(days=days)


def stocked(store: Store, item: Item, quantity: int) -> None:
    receipt = services.transaction_create(
        store=store,
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        date=days_ago(60),
        lines=[LineInput(item=item, batch="B1", expiry=EXPIRY, quantity=quantity)],
    )
    services.transaction_finalise(record=receipt)


def sent(
    sender: Store, receiver: Store, date: datetime.date, *lines: tuple[Item, int, str]
) -> Transaction:
    """A finalised customer invoice from `sender` to `receiver`'s name, of (item, qty, price)."""
    outbound = services.transaction_create(
        store=sender,
        kind=Transaction.Kind.CUSTOMER_INVOICE,
        name=receiver.trading_name,
        date=date,
        lines=[
            LineInput(
                item=item, batch="B1", expiry=EXPIRY, quantity=quantity, sell_price=Decimal(price)
            )
            for item, quantity, price in lines
        ],
    )
    return services.transaction_finalise(record=outbound)


def database_value(outbound: Transaction) -> Decimal:
    """Sum of quantity x sell price of `outbound`'s lines, straight from the database."""
    total = TransactionLine.objects.filter(transaction=outbound).aggregate(
        value=Sum(F("quantity") * F("sell_price"))
    )["value"]
    return Decimal(str(total)).quantize(Decimal("0.01"))


@pytest.fixture
def network() -> dict[str, Any]:
    """On the master: WH and CL hosted here, RM hosted by satellite 3 (so no inbound is made).

    Transfers: WH->CL 40 days ago (inbound draft, CL lowered nothing), WH->RM 10 days ago (no
    inbound here), CL->WH 2 days ago (inbound draft), WH->CL 5 days ago received with 2 short.
    """
    warehouse = services.store_create(code="WH", name="Regional warehouse")
    clinic = services.store_create(code="CL", name="Hill clinic")
    remote = services.store_create(code="RM", name="Remote post")
    peer_save(peer=SyncPeer(sync_id=3, name="remote", store_code="RM", url="http://127.0.0.1:9/"))
    amox = services.item_create(code="AMX", name="Amoxicillin", unit="capsule")
    ors = services.item_create(code="ORS", name="Oral rehydration salts", unit="sachet")
    stocked(warehouse, amox, 500)
    stocked(warehouse, ors, 500)
    stocked(clinic, amox, 100)
    old = sent(warehouse, clinic, days_ago(40), (amox, 30, "2.50"), (ors, 12, "1.25"))
    far = sent(warehouse, remote, days_ago(10), (amox, 100, "2.40"))
    back = sent(clinic, warehouse, days_ago(2), (amox, 7, "3.00"))
    done = sent(warehouse, clinic, days_ago(5), (amox, 20, "2.50"), (ors, 8, "1.00"))
    inbound = done.inbound
    services.transaction_save(
        record=inbound,
        lines=[
            LineInput(
                id=line.pk,
                item=line.item,
                batch=line.batch,
                expiry=line.expiry,
                quantity=line.quantity - (2 if line.item == amox else 0),
                cost_price=line.cost_price,
            )
            for line in inbound.lines.order_by("pk")
        ],
    )
    services.transaction_finalise(record=Transaction.objects.get(pk=inbound.pk))
    return {
        "warehouse": warehouse,
        "clinic": clinic,
        "remote": remote,
        "old": old,
        "far": far,
        "back": back,
        "done": done,
    }


@pytest.fixture
def reporter(client: Client) -> Client:
    client.force_login(UserFactory(permissions=["stores.view_reports"]))
    return client


# --- the selector --------------------------------------------------------------------------


def test_unreceived_transfers_are_listed_with_database_values_and_days(
    network: dict[str, Any],
) -> None:
    transit = goods_in_transit(scope=MASTER, today=timezone.localdate())
    listed = [(t.number, t.from_code, t.to_code, t.days, t.value) for t in transit.transfers]
    expected = [
        (network[key].number, network[key].store.code, network[key].name.store.code, days,
         database_value(network[key]))
        for key, days in [("old", 40), ("far", 10), ("back", 2)]
    ]  # fmt: skip
    assert listed == expected
    assert [t.value for t in transit.transfers] == [
        Decimal("90.00"),
        Decimal("240.00"),
        Decimal("21.00"),
    ]
    # The received one is left out, though its receiver counted in less than was sent.
    assert network["done"].number not in [
        t.number for t in transit.transfers if t.from_code == "WH" and t.to_code == "CL"
    ]


def test_an_inbound_draft_still_counts_as_in_transit_and_shows_its_number(
    network: dict[str, Any],
) -> None:
    transit = goods_in_transit(scope=MASTER, today=timezone.localdate())
    by_number = {(t.from_code, t.number): t for t in transit.transfers}
    old, far = network["old"], network["far"]
    assert Transaction.objects.get(transfer_of=old).status == Transaction.Status.DRAFT
    assert by_number[("WH", old.number)].inbound_number == old.inbound.number
    # RM is hosted by a satellite: this master made no inbound for it.
    assert by_number[("WH", far.number)].inbound_number is None


def test_sent_equals_received_plus_in_transit_and_counted_shows_the_shortfall(
    network: dict[str, Any],
) -> None:
    transit = goods_in_transit(scope=MASTER, today=timezone.localdate())
    every = [network[key] for key in ("old", "far", "back", "done")]
    assert transit.sent_value == sum(map(database_value, every)) == Decimal("409.00")
    assert transit.received_value == database_value(network["done"]) == Decimal("58.00")
    assert transit.in_transit_value == transit.sent_value - transit.received_value
    # Two AMX at 2.50 short on receipt.
    assert transit.counted_value == Decimal("53.00")


def test_filters_by_sending_and_receiving_store(network: dict[str, Any]) -> None:
    today = timezone.localdate()
    from_clinic = goods_in_transit(scope=MASTER, today=today, from_store=network["clinic"])
    assert [(t.from_code, t.to_code) for t in from_clinic.transfers] == [("CL", "WH")]
    to_clinic = goods_in_transit(scope=MASTER, today=today, to_store=network["clinic"])
    assert [t.number for t in to_clinic.transfers] == [network["old"].number]
    assert to_clinic.sent_value == database_value(network["old"]) + database_value(network["done"])
    both = goods_in_transit(
        scope=MASTER, today=today, from_store=network["remote"], to_store=network["clinic"]
    )
    assert both.transfers == []
    assert both.sent_value == Decimal("0.00")


def test_a_satellite_sees_transfers_from_and_to_its_own_store_only(
    network: dict[str, Any],
) -> None:
    scope = ReportScope(is_master=False, store=network["remote"])
    transit = goods_in_transit(scope=scope, today=timezone.localdate())
    assert [(t.from_code, t.to_code, t.number) for t in transit.transfers] == [
        ("WH", "RM", network["far"].number)
    ]
    clinic = goods_in_transit(
        scope=ReportScope(is_master=False, store=network["clinic"]), today=timezone.localdate()
    )
    assert {(t.from_code, t.to_code) for t in clinic.transfers} == {("WH", "CL"), ("CL", "WH")}
    unsynced = goods_in_transit(scope=ReportScope(is_master=False), today=timezone.localdate())
    assert (unsynced.transfers, unsynced.sent_value) == ([], Decimal("0.00"))


def test_staleness_follows_the_settings(settings: Any) -> None:
    settings.TRANSIT_WARNING_DAYS, settings.TRANSIT_ERROR_DAYS = 7, 30
    assert [transit_staleness(days) for days in (7, 8, 30, 31)] == [
        "ok",
        "warning",
        "warning",
        "error",
    ]


# --- the page and its CSV ------------------------------------------------------------------


def test_the_page_shows_the_transfers_totals_badges_and_chart(
    reporter: Client, network: dict[str, Any]
) -> None:
    response = reporter.get(URL)
    assert response.status_code == 200
    table = page_table(response.getvalue())
    old, far, back = network["old"], network["far"], network["back"]
    assert [row[:5] + row[7:] for row in table.body] == [
        ["WH Regional warehouse", "CL Hill clinic", str(old.number), short_date(old.date), "40",
         "90.00"],
        ["WH Regional warehouse", "RM Remote post", str(far.number), short_date(far.date), "10",
         "240.00"],
        ["CL Hill clinic", "WH Regional warehouse", str(back.number), short_date(back.date), "2",
         "21.00"],
    ]  # fmt: skip
    assert [row[5] for row in table.body] == ["Over 30 days", "Over 7 days", "OK"]
    assert table.footer == [["Total", "3 transfers", "", "—", "—", "", "—", "351.00"]]
    html = response.getvalue().decode()
    assert '<td class="sync-badge sync-error">Over 30 days</td>' in html
    assert '<td class="sync-badge sync-warning">Over 7 days</td>' in html
    assert 'aria-label="Value in transit by receiving store"' in html
    assert "RM Remote post: 240</title>" in html
    summary = html[html.index('id="transit-summary"') :]
    assert "<strong>409.00</strong> sent" in summary
    assert "<strong>58.00</strong> received" in summary
    assert "<strong>351.00</strong> in transit" in summary


def test_the_csv_holds_the_same_rows_under_the_same_filters(
    reporter: Client, network: dict[str, Any]
) -> None:
    response = reporter.get(URL, {"from_store": "WH", "format": "csv"})
    assert response["Content-Disposition"] == 'attachment; filename="goods-in-transit.csv"'
    rows = list(csv.reader(io.StringIO(response.getvalue().decode())))
    old, far = network["old"], network["far"]
    assert rows == [
        ["From store", "To store", "Outbound number", "Date sent", "Days in transit", "Status",
         "Inbound draft", "Value"],
        ["WH Regional warehouse", "CL Hill clinic", str(old.number), old.date.isoformat(), "40",
         "Over 30 days", str(old.inbound.number), "90.00"],
        ["WH Regional warehouse", "RM Remote post", str(far.number), far.date.isoformat(), "10",
         "Over 7 days", "", "240.00"],
        ["Total", "2 transfers", "", "", "", "", "", "330.00"],
    ]  # fmt: skip


def test_the_report_needs_the_reports_permission(client: Client, network: dict[str, Any]) -> None:
    assert client.get(URL).status_code == 302
    client.force_login(UserFactory())
    assert client.get(URL).status_code == 403


def test_the_reports_index_lists_goods_in_transit(reporter: Client) -> None:
    page = reporter.get("/reports/").getvalue().decode()
    assert f'href="{URL}">Goods in transit</a>' in page


def test_a_satellites_page_shows_its_own_stores_transfers(
    reporter: Client, network: dict[str, Any]
) -> None:
    SyncPeer.objects.all().delete()
    preferences_update(sync_id=3)
    master = peer_save(
        peer=SyncPeer(sync_id=1, name="master", store_code="WH", url="http://127.0.0.1:8000/")
    )
    PeerStateFactory(peer=master, hosted_store_id=network["remote"].pk)
    table = page_table(reporter.get(URL).getvalue())
    assert [row[:3] for row in table.body] == [
        ["WH Regional warehouse", "RM Remote post", str(network["far"].number)]
    ]


# --- the transaction admin's transfer marks ------------------------------------------------


@pytest.fixture
def admin_client(client: Client) -> Client:
    client.force_login(UserFactory(is_superuser=True))
    return client


def change_url(record: Transaction) -> str:
    return f"/admin/stores/transaction/{record.pk}/change/"


def test_the_list_marks_each_half_and_links_the_other_when_held_here(
    admin_client: Client, network: dict[str, Any]
) -> None:
    old = network["old"]
    page = admin_client.get("/admin/stores/transaction/").getvalue().decode()
    assert (
        f'<a class="transfer-badge transfer-outbound" href="{change_url(old.inbound)}" '
        f'title="{old.inbound} of CL Hill clinic">Outbound to CL</a>'
    ) in page
    assert (
        f'<a class="transfer-badge transfer-inbound" href="{change_url(old)}" '
        f'title="{old} of WH Regional warehouse">Inbound from WH</a>'
    ) in page
    # RM's site has not sent its inbound back: no link.
    assert (
        '<span class="transfer-badge transfer-outbound" title="RM Remote post">'
        "Outbound to RM</span>"
    ) in page
    assert page.count("transfer-badge transfer-") == 4 + 3  # 4 outbounds, 3 inbounds held here
    assert "stores/admin.css" in page


def long_date(value: datetime.date) -> str:
    """A date as the admin writes it in English: `9 Mar 2026` (DATE_FORMAT), not ISO."""
    return f"{value.day} {value.strftime('%b')} {value.year}"


def test_a_received_outbound_shows_where_when_and_sent_against_received(
    admin_client: Client, network: dict[str, Any]
) -> None:
    done = network["done"]
    page = admin_client.get(change_url(done)).getvalue().decode()
    today = long_date(timezone.localdate())
    assert (
        f'<a href="{change_url(done.inbound)}">Received at CL Hill clinic on {today}</a>.'
    ) in page
    rows = page_rows(page)
    assert rows == [
        ["AMX Amoxicillin", "B1", "20", "18"],
        ["ORS Oral rehydration salts", "B1", "8", "8"],
    ]


def test_an_unreceived_outbound_says_in_transit_or_waiting_in_draft(
    admin_client: Client, network: dict[str, Any]
) -> None:
    old, far = network["old"], network["far"]
    waiting = admin_client.get(change_url(old)).getvalue().decode()
    assert (
        f'Not yet received: <a href="{change_url(old.inbound)}">{old.inbound}</a> waits in draft '
        "at CL Hill clinic."
    ) in waiting
    assert (
        "In transit: not yet received at RM Remote post."
        in admin_client.get(change_url(far)).getvalue().decode()
    )


def test_an_inbound_shows_its_outbounds_number_and_sent_quantities(
    admin_client: Client, network: dict[str, Any]
) -> None:
    old = network["old"]
    page = admin_client.get(change_url(old.inbound)).getvalue().decode()
    assert (
        f'<a href="{change_url(old)}">Customer invoice (goods issued) {old.number} of '
        f"WH Regional warehouse</a>, sent on {long_date(old.date)}."
    ) in page
    assert '<th class="num">To receive</th>' in page
    assert page_rows(page) == [
        ["AMX Amoxicillin", "B1", "30", "30"],
        ["ORS Oral rehydration salts", "B1", "12", "12"],
    ]


def test_a_plain_invoice_has_no_transfer_fields(
    admin_client: Client, network: dict[str, Any]
) -> None:
    receipt = Transaction.objects.filter(kind=Transaction.Kind.SUPPLIER_INVOICE, transfer_of=None)
    page = admin_client.get(change_url(receipt.first())).getvalue().decode()  # type: ignore[arg-type]
    assert "transfer-lines" not in page
    assert "field-received" not in page
    assert "field-sent" not in page


def test_the_incoming_filter_lists_inbound_drafts_of_stores_hosted_here(
    admin_client: Client, network: dict[str, Any]
) -> None:
    # An inbound draft at RM, which satellite 3 hosts: the master holds it, but does not receive it.
    (remote_inbound,) = inbounds_make(store_ids=[network["remote"].pk])
    response = admin_client.get("/admin/stores/transaction/", {"transfer": "incoming"})
    shown = {record.pk for record in response.context["cl"].result_list}
    assert shown == {network["old"].inbound.pk, network["back"].inbound.pk}
    assert remote_inbound.pk not in shown
    assert network["done"].inbound.pk not in shown  # received
    assert "Incoming waiting to be received" in response.getvalue().decode()


def page_rows(page: str) -> list[list[str]]:
    """The body cells of the transfer-lines table on an admin page."""
    table = page[page.index('<table class="transfer-lines">') :]
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if "<td" in row]
