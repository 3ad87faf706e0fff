"""Import and export of stores, items and names through the admin's real import and export views."""

import csv
import io
import time

import pytest
import tablib
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from stores import services
from stores.models import Item, Name, Store
from sync.models import ChangeLog
from tests.factories import ItemFactory, NameFactory, StockLineFactory, SyncLogFactory

pytestmark = pytest.mark.django_db

CSV, XLSX = "0", "1"  # the admin's format choices, in IMPORT_EXPORT_FORMATS order


@pytest.fixture
def admin_client(client: Client, django_user_model) -> Client:
    client.force_login(
        django_user_model.objects.create_superuser("importer", "importer@example.org", "pw")
    )
    return client


def file_of(rows: list[list[object]], file_format: str) -> bytes:
    """`rows` (headers first) as a CSV or XLSX file."""
    dataset = tablib.Dataset(*rows[1:], headers=rows[0])
    if file_format == XLSX:
        return bytes(dataset.export("xlsx"))
    return str(dataset.export("csv")).encode()


def item_rows(count: int, *, name: str = "Paracetamol 500 mg") -> list[list[object]]:
    return [["code", "name", "unit", "active"]] + [
        [f"I{number:05d}", f"{name} ({number})", "tablet", "1"] for number in range(count)
    ]


def preview(client: Client, model: str, content: bytes, file_format: str = CSV):
    """Upload `content` to the import view of `model`: the dry run and its preview page."""
    upload = io.BytesIO(content)
    upload.name = "master.xlsx" if file_format == XLSX else "master.csv"
    return client.post(
        reverse(f"admin:stores_{model}_import"),
        {"format": file_format, "resource": "0", "import_file": upload},
    )


def confirm(client: Client, model: str, previewed):
    """Confirm the import the preview `previewed` offered."""
    form = previewed.context["confirm_form"]
    return client.post(reverse(f"admin:stores_{model}_process_import"), form.initial, follow=True)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def import_logs(model: type) -> int:
    return LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(model)).count()


@pytest.mark.parametrize("file_format", [CSV, XLSX], ids=["csv", "xlsx"])
def test_twenty_thousand_items_are_previewed_then_imported_with_change_log_and_history(
    admin_client: Client, file_format: str
) -> None:
    content = file_of(item_rows(20_000), file_format)
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as previewing:
        previewed = preview(admin_client, "item", content, file_format)
    dry_run = time.perf_counter() - started
    # Rows are checked and written in bulk: a statement per row would make 20,000 of them.
    assert len(previewing) < 1000
    assert previewed.status_code == 200
    result = previewed.context["result"]
    assert not result.has_errors()
    assert not result.has_validation_errors()
    assert (result.totals["new"], result.totals["update"], result.totals["invalid"]) == (
        20_000,
        0,
        0,
    )
    assert "confirm_form" in previewed.context
    assert Item.objects.count() == 0
    assert ChangeLog.objects.filter(table_name="stores_item").count() == 0
    assert import_logs(Item) == 0

    started = time.perf_counter()
    with CaptureQueriesContext(connection) as confirming:
        done = confirm(admin_client, "item", previewed)
    applied = time.perf_counter() - started
    assert len(confirming) < 1000
    kind = "xlsx" if file_format == XLSX else "csv"
    # The figures the README gives (run with -s to see them).
    print(f"\n20,000 items, {kind}: dry run {dry_run:.1f} s, confirm {applied:.1f} s")  # noqa: T201

    assert done.status_code == 200
    assert Item.objects.count() == 20_000
    assert Item.objects.get(code="I00042").name == "Paracetamol 500 mg (42)"
    changes = ChangeLog.objects.filter(table_name="stores_item")
    assert changes.count() == 20_000
    assert set(changes.values_list("changed_by", flat=True)) == {"importer"}
    assert LogEntry.objects.filter(action_flag=ADDITION, user__username="importer").count() == (
        20_000
    )
    assert any("20000 new" in message for message in messages_of(done))


def test_a_file_with_bad_rows_is_refused_row_by_row_and_nothing_is_applied(
    admin_client: Client,
) -> None:
    ItemFactory(code="I00001", name="Kept as it is", unit="tablet")
    rows = [
        ["code", "name", "unit", "active"],
        ["I00001", "Changed name", "tablet", "1"],
        ["", "No code at all", "tablet", "1"],
        ["I00003", "Strange unit", "tabs", "1"],
        ["I00004", "First of two", "capsule", "1"],
        ["I00004", "Second of two", "capsule", "1"],
        ["I00006", "A good new item", "vial", "1"],
        ["I00007", "Active or not?", "vial", "maybe"],
    ]
    previewed = preview(admin_client, "item", file_of(rows, CSV))

    result = previewed.context["result"]
    assert "confirm_form" not in previewed.context
    refused = {row.number: row.field_specific_errors for row in result.invalid_rows}
    assert set(refused) == {2, 3, 5, 7}
    assert refused[2]["code"] == ["This field cannot be blank."]
    assert "Unknown unit tabs" in refused[3]["unit"][0]
    assert refused[5]["code"] == [
        "Code I00004 is on row 4 already: each code may appear once in a file."
    ]
    assert refused[7]["active"] == ["maybe is not 1 or 0: give 1 (yes) or 0 (no)."]
    page = previewed.content.decode()
    assert "Unknown unit tabs" in page
    assert "is on row 4 already" in page
    assert list(Item.objects.values_list("code", "name")) == [("I00001", "Kept as it is")]
    assert ChangeLog.objects.filter(table_name="stores_item").count() == 1  # the factory's


def test_a_re_import_with_new_names_updates_the_same_records(admin_client: Client) -> None:
    confirm(admin_client, "item", preview(admin_client, "item", file_of(item_rows(50), CSV)))
    ids = dict(Item.objects.values_list("code", "id"))

    rows = item_rows(50, name="Paracetamol 500 mg tablet")
    previewed = preview(admin_client, "item", file_of(rows, XLSX), XLSX)
    result = previewed.context["result"]
    assert (result.totals["new"], result.totals["update"]) == (0, 50)
    confirm(admin_client, "item", previewed)

    assert dict(Item.objects.values_list("code", "id")) == ids
    assert Item.objects.get(code="I00007").name == "Paracetamol 500 mg tablet (7)"
    assert LogEntry.objects.filter(action_flag=CHANGE).count() == 50


def test_re_importing_unchanged_rows_writes_nothing(admin_client: Client) -> None:
    content = file_of(item_rows(20), CSV)
    confirm(admin_client, "item", preview(admin_client, "item", content))
    changes = ChangeLog.objects.count()

    previewed = preview(admin_client, "item", content)
    assert previewed.context["result"].totals["skip"] == 20
    confirm(admin_client, "item", previewed)

    assert ChangeLog.objects.count() == changes


def test_an_import_on_a_satellite_is_refused_with_the_master_data_message(
    admin_client: Client, satellite: int
) -> None:
    with pytest.raises(services.MasterDataReadOnlyError) as refusal:
        services.master_data_ensure_writable()
    page = admin_client.get(reverse("admin:stores_item_changelist")).content.decode()
    assert reverse("admin:stores_item_export") in page
    assert reverse("admin:stores_item_import") not in page

    response = preview(admin_client, "item", file_of(item_rows(3), CSV))
    assert response.status_code == 302
    followed = admin_client.get(response["Location"])
    assert messages_of(followed) == [str(refusal.value)]
    response = admin_client.post(
        reverse("admin:stores_item_process_import"),
        {"import_file_name": "x", "original_file_name": "x.csv", "format": CSV},
        follow=True,
    )
    assert messages_of(response) == [str(refusal.value)]
    assert Item.objects.count() == 0


def test_imported_stores_get_their_trading_names_and_names_keep_their_rules(
    admin_client: Client,
) -> None:
    rows = [["code", "name", "active"], ["S101", "Island Clinic", "1"]]
    confirm(admin_client, "store", preview(admin_client, "store", file_of(rows, CSV)))
    store = Store.objects.get(code="S101")
    assert store.trading_name.kind == Name.Kind.STORE

    rows = [
        ["code", "name", "kind", "active"],
        ["N001", "Coastal Clinic", "customer", "1"],
        ["N002", "A store without a store", "store", "1"],
        ["N003", "No such kind", "wholesaler", "1"],
    ]
    previewed = preview(admin_client, "name", file_of(rows, CSV))
    refused = {
        row.number: row.field_specific_errors for row in previewed.context["result"].invalid_rows
    }
    assert set(refused) == {2, 3}
    assert "import the store instead" in refused[2]["kind"][0]
    assert "not a valid choice" in refused[3]["kind"][0]
    assert not Name.objects.filter(code__startswith="N00").exists()


def export(client: Client, model: str, query: str = "", file_format: str = CSV) -> str:
    """What the export view of `model` gives for the list filtered by `query`, as text."""
    resource = {"store": "storeresource", "item": "itemresource", "name": "nameresource"}[model]
    page = client.get(reverse(f"admin:stores_{model}_export") + query)
    fields = [name for name in page.context["form"].fields if name.startswith(f"{resource}_")]
    response = client.post(
        reverse(f"admin:stores_{model}_export") + query,
        {"format": file_format, "resource": "0", **dict.fromkeys(fields, "on")},
    )
    assert response.status_code == 200
    return response.content.decode("utf-8-sig")


def test_an_export_imports_back_cleanly_with_no_change(admin_client: Client) -> None:
    ItemFactory.create_batch(5)
    ItemFactory(code="I99999", name="=cmd|' /C calc'!A0", unit="vial", active=False)
    exported = export(admin_client, "item")
    header, *lines = list(csv.reader(io.StringIO(exported)))
    assert header == ["code", "name", "unit", "active"]
    assert len(lines) == 6
    assert "id" not in header

    previewed = preview(admin_client, "item", exported.encode())
    result = previewed.context["result"]
    assert not result.has_validation_errors(), result.invalid_rows
    # A name that a spreadsheet would run as a formula is escaped on export: it comes back as
    # a change the preview shows, never run.
    assert (result.totals["new"], result.totals["skip"], result.totals["update"]) == (0, 5, 1)


def test_an_export_keeps_the_list_filters_and_search(admin_client: Client) -> None:
    NameFactory(code="N1", name="North Clinic", kind=Name.Kind.CUSTOMER)
    NameFactory(code="N2", name="North Pharma", kind=Name.Kind.SUPPLIER)
    NameFactory(code="N3", name="South Clinic", kind=Name.Kind.CUSTOMER)
    services.store_create(code="S777", name="Hill Clinic")

    exported = export(admin_client, "name", "?kind__exact=customer&q=North")
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [(row["code"], row["kind"]) for row in rows] == [("N1", "customer")]

    exported = export(admin_client, "name", "?kind__exact=store")
    stores = list(csv.DictReader(io.StringIO(exported)))
    assert [(row["code"], row["store"]) for row in stores] == [("S777", "S777")]
    # A store's own name comes back unchanged: its store column is shown, never imported.
    previewed = preview(admin_client, "name", exported.encode())
    assert previewed.context["result"].totals["skip"] == 1


def test_the_import_offers_csv_and_xlsx_only(admin_client: Client) -> None:
    page = admin_client.get(reverse("admin:stores_item_import"))
    assert [label for _, label in page.context["form"].fields["format"].choices] == [
        "---",
        "csv",
        "xlsx",
    ]


def test_stock_lines_and_sync_logs_export_with_their_filters(admin_client: Client) -> None:
    StockLineFactory(store__code="S010", item__code="I010", quantity=7)
    StockLineFactory(store__code="S020", item__code="I020", quantity=9)
    SyncLogFactory(result="failure")
    SyncLogFactory(result="success", error_code="", message="")

    store = Store.objects.get(code="S010")
    page = admin_client.get(
        reverse("admin:stores_stockline_export") + f"?store__id__exact={store.pk}"
    )
    fields = [name for name in page.context["form"].fields if name.startswith("stocklineresource_")]
    response = admin_client.post(
        reverse("admin:stores_stockline_export") + f"?store__id__exact={store.pk}",
        {"format": CSV, "resource": "0", **dict.fromkeys(fields, "on")},
    )
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [(row["store"], row["item"], row["quantity"]) for row in rows] == [("S010", "I010", "7")]

    url = reverse("admin:sync_synclog_export") + "?result__exact=failure"
    page = admin_client.get(url)
    fields = [
        name for name in page.context["form"].fields if "_" in name and name != "export_items"
    ]
    response = admin_client.post(
        url, {"format": CSV, "resource": "0", **dict.fromkeys(fields, "on")}
    )
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [row["result"] for row in rows] == ["failure"]


def test_a_file_that_no_longer_passes_at_confirmation_applies_nothing(
    admin_client: Client,
) -> None:
    only_user = ItemFactory(code="K1", unit="jerrycan")
    rows = [["code", "name", "unit", "active"], ["K2", "Water", "jerrycan", "1"]]
    rows += [[f"K{number}", "Soap", "each", "1"] for number in range(3, 30)]
    previewed = preview(admin_client, "item", file_of(rows, CSV))
    assert "confirm_form" in previewed.context
    only_user.delete()  # the unit "jerrycan" is no longer in use, so no longer known

    done = confirm(admin_client, "item", previewed)

    assert messages_of(done) == [
        "Nothing was imported: the file no longer passes its checks. Import it again to see why."
    ]
    assert Item.objects.count() == 0
    assert import_logs(Item) == 0
