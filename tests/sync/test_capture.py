"""Every write path logs its changes in the writer's own transaction, and readers skip none."""

import contextlib
import datetime
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection, transaction
from django.db.models import Max, Model, Q
from django.test import Client

from stores import services
from stores.models import Item, StockLine, Transaction
from sync.capture import changes_from
from sync.changes import Cursor, changes_since
from sync.integration import changeset_apply
from sync.models import ChangeLog
from tests.factories import (
    ItemFactory,
    StockLineFactory,
    StoreFactory,
    TransactionFactory,
    TransactionLineFactory,
    changeset_of,
)

pytestmark = pytest.mark.django_db

Change = tuple[str, uuid.UUID, str]
EXPIRY = datetime.date(2028, 1, 31)


class Rollback(Exception):
    """Raised to roll a test's write back."""


@contextlib.contextmanager
def rolled_back() -> Iterator[None]:
    """Run the block in a transaction that is rolled back at its end."""
    with contextlib.suppress(Rollback), transaction.atomic():
        yield
        raise Rollback


def last_seq() -> int:
    return ChangeLog.objects.aggregate(last=Max("seq"))["last"] or 0


def changes_after(seq: int) -> list[Change]:
    return sorted(
        ChangeLog.objects.filter(seq__gt=seq).values_list("table_name", "record_id", "action")
    )


def assert_logged_in_the_same_transaction(write: Callable[[], list[Change]]) -> None:
    """`write` logs exactly the changes it returns, and rolling it back takes them away too."""
    start = last_seq()
    with rolled_back():
        expected = write()
        assert changes_after(start) == sorted(expected)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_current_xact_id()::text::bigint")
                writer_txid = cursor.fetchone()[0]
            logged_txids = ChangeLog.objects.filter(seq__gt=start).values_list("txid", flat=True)
            assert set(logged_txids) == {writer_txid}
    assert changes_after(start) == []


def upserts(*records: Model) -> list[Change]:
    return [(r._meta.db_table, r.pk, "upsert") for r in records]


def deletes(*records: Model) -> list[Change]:
    return [(r._meta.db_table, r.pk, "delete") for r in records]


def test_service_item_create_logs_the_item() -> None:
    def write() -> list[Change]:
        return upserts(services.item_create(code="PCM500", name="Paracetamol", unit="tablet"))

    assert_logged_in_the_same_transaction(write)


def test_service_transaction_create_logs_the_transaction_and_its_lines() -> None:
    store, items = StoreFactory(), ItemFactory.create_batch(2)

    def write() -> list[Change]:
        record = services.transaction_create(
            store=store,
            kind=Transaction.Kind.SUPPLIER_INVOICE,
            date=datetime.date(2026, 11, 2),
            lines=[
                services.LineInput(item=item, batch="B1", expiry=EXPIRY, quantity=5)
                for item in items
            ],
        )
        return upserts(record, *record.lines.all())

    assert_logged_in_the_same_transaction(write)


def test_service_transaction_finalise_logs_new_and_changed_stock_and_the_transaction() -> None:
    store = StoreFactory()
    on_hand = StockLineFactory(store=store, batch="B1", expiry=EXPIRY, quantity=10)
    new_item = ItemFactory()
    record = TransactionFactory(store=store)
    TransactionLineFactory(transaction=record, item=on_hand.item, batch="B1", expiry=EXPIRY)
    TransactionLineFactory(transaction=record, item=new_item, batch="B2", expiry=EXPIRY)

    def write() -> list[Change]:
        services.transaction_finalise(record=record)
        return upserts(record, on_hand, StockLine.objects.get(item=new_item))

    assert_logged_in_the_same_transaction(write)


def test_admin_add_change_and_delete_log_the_item(admin_client: Client) -> None:
    fields = {"code": "AMX250", "name": "Amoxicillin", "unit": "capsule", "active": "on"}

    def add() -> list[Change]:
        response = admin_client.post("/admin/stores/item/add/", fields)
        assert response.status_code == 302
        return upserts(Item.objects.get(code="AMX250"))

    assert_logged_in_the_same_transaction(add)
    item = ItemFactory()

    def change() -> list[Change]:
        response = admin_client.post(
            f"/admin/stores/item/{item.pk}/change/", {**fields, "code": item.code}
        )
        assert response.status_code == 302
        return upserts(item)

    assert_logged_in_the_same_transaction(change)

    def delete() -> list[Change]:
        response = admin_client.post(f"/admin/stores/item/{item.pk}/delete/", {"post": "yes"})
        assert response.status_code == 302
        return deletes(item)

    assert_logged_in_the_same_transaction(delete)


def test_admin_add_transaction_logs_it_and_its_inline_lines(admin_client: Client) -> None:
    store, item = StoreFactory(), ItemFactory()
    form = {
        "store": store.pk,
        "kind": Transaction.Kind.SUPPLIER_INVOICE,
        "date": "2026-11-02",
        "lines-TOTAL_FORMS": "1",
        "lines-INITIAL_FORMS": "0",
        "lines-MIN_NUM_FORMS": "0",
        "lines-MAX_NUM_FORMS": "1000",
        "lines-0-item": item.pk,
        "lines-0-batch": "B1",
        "lines-0-expiry": "2028-01-31",
        "lines-0-quantity": "12",
        "lines-0-cost_price": "0.10",
        "lines-0-sell_price": "0.20",
    }

    def write() -> list[Change]:
        response = admin_client.post("/admin/stores/transaction/add/", form)
        assert response.status_code == 302, response.context["errors"]
        record = Transaction.objects.get(store=store)
        return upserts(record, *record.lines.all())

    assert_logged_in_the_same_transaction(write)


def test_queryset_update_logs_every_updated_row() -> None:
    items = ItemFactory.create_batch(3)

    def write() -> list[Change]:
        Item.objects.filter(pk__in=[items[0].pk, items[1].pk]).update(active=False)
        return upserts(items[0], items[1])

    assert_logged_in_the_same_transaction(write)


def test_bulk_create_logs_every_created_row() -> None:
    def write() -> list[Change]:
        return upserts(*Item.objects.bulk_create(ItemFactory.build_batch(3)))

    assert_logged_in_the_same_transaction(write)


def test_bulk_update_logs_every_updated_row() -> None:
    items = ItemFactory.create_batch(3)

    def write() -> list[Change]:
        for item in items:
            item.unit = "vial"
        Item.objects.bulk_update(items, ["unit"])
        return upserts(*items)

    assert_logged_in_the_same_transaction(write)


def test_queryset_delete_logs_every_deleted_row() -> None:
    items = ItemFactory.create_batch(3)

    def write() -> list[Change]:
        Item.objects.filter(pk__in=[items[0].pk, items[2].pk]).delete()
        return deletes(items[0], items[2])

    assert_logged_in_the_same_transaction(write)


def test_deleting_a_transaction_logs_the_cascaded_deletes_of_its_lines() -> None:
    record = TransactionFactory()
    lines = TransactionLineFactory.create_batch(2, transaction=record)

    def write() -> list[Change]:
        Transaction.objects.filter(pk=record.pk).delete()
        return deletes(record, *lines)

    assert_logged_in_the_same_transaction(write)


def test_raw_sql_insert_update_and_delete_are_logged() -> None:
    item_id = uuid.uuid4()
    db_id = Item._meta.pk.get_db_prep_value(item_id, connection)  # type: ignore[union-attr]

    def write() -> list[Change]:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO stores_item (id, code, name, unit, active) "
                "VALUES (%s, 'RAW1', 'Raw item', 'tablet', %s)",
                [db_id, True],
            )
            cursor.execute("UPDATE stores_item SET unit = 'vial' WHERE id = %s", [db_id])
            cursor.execute("DELETE FROM stores_item WHERE id = %s", [db_id])
        return [("stores_item", item_id, action) for action in ("upsert", "upsert", "delete")]

    assert_logged_in_the_same_transaction(write)


def test_integration_logs_its_writes_marked_with_their_source_site() -> None:
    item = ItemFactory.build()

    def write() -> list[Change]:
        changeset_apply(changeset=changeset_of(item), source_site=2)
        return upserts(item)

    assert_logged_in_the_same_transaction(write)
    start = last_seq()
    changeset_apply(changeset=changeset_of(item), source_site=2)
    local = ItemFactory()
    assert list(
        ChangeLog.objects.filter(seq__gt=start).values_list("record_id", "source_site")
    ) == [(item.pk, 2), (local.pk, None)]


def test_every_migrate_puts_back_triggers_a_table_rebuild_dropped() -> None:
    # What a SQLite table rebuild (most AlterField operations) does to the triggers on a table.
    with connection.cursor() as cursor:
        for event in ("insert", "update", "delete"):
            name = f"sync_capture_stores_item_{event}"
            on_table = "" if connection.vendor == "sqlite" else " ON stores_item"
            cursor.execute(f"DROP TRIGGER {name}{on_table}")
    ItemFactory()
    assert not ChangeLog.objects.filter(table_name="stores_item").exists()
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    item = ItemFactory()
    assert list(ChangeLog.objects.values_list("table_name", "record_id", "action")) == [
        ("stores_item", item.pk, "upsert")
    ]


def test_rolled_back_transaction_leaves_no_change_rows() -> None:
    start = last_seq()
    store = StoreFactory()
    with rolled_back():
        TransactionLineFactory(transaction__store=store)
        services.item_create(code="PCM500", name="Paracetamol", unit="tablet")
        assert len(changes_after(start)) == 6
    assert changes_after(start) == upserts(store)
    assert not Transaction.objects.exists()


def test_change_rows_name_the_store_of_store_data_and_none_for_master_data() -> None:
    store = StoreFactory()
    record = TransactionFactory(store=store)
    line = TransactionLineFactory(transaction=record)
    stock_line = StockLineFactory(store=store, item=line.item)
    stores_of = dict(ChangeLog.objects.values_list("record_id", "store_id"))
    assert stores_of[record.pk] == store.pk
    assert stores_of[line.pk] == store.pk
    assert stores_of[stock_line.pk] == store.pk
    assert stores_of[store.pk] is None
    assert stores_of[line.item_id] is None
    assert stores_of[record.name_id] is None


@pytest.mark.django_db(transaction=True)
def test_changes_from_outside_a_transaction_is_refused() -> None:
    with pytest.raises(RuntimeError, match="inside transaction.atomic"), changes_from(2):
        pass


def _item_insert(cursor: psycopg.Cursor) -> uuid.UUID:
    item_id = uuid.uuid4()
    cursor.execute(
        "INSERT INTO stores_item (id, code, name, unit, active) "
        "VALUES (%s, %s, 'Concurrent', 'tablet', true)",
        [item_id, f"C{item_id.hex[:8]}"],
    )
    return item_id


def _read_all(cursor: Cursor, expected: int, timeout: float = 10.0) -> list[ChangeLog]:
    """Read from `cursor` the way a puller does until `expected` changes arrived or time is up.

    The horizon is the oldest transaction running anywhere on the server, so another session's
    open transaction may hold changes back for a moment; they must still arrive, in order.
    """
    received: list[ChangeLog] = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        batch = list(changes_since(cursor, Q()))
        received += batch
        cursor = Cursor.of(batch[-1]) if batch else cursor
        time.sleep(0.05)
    return received


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs concurrent PostgreSQL writers")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("a_writes_first", [True, False], ids=["a-lower-seq", "a-only-older"])
def test_reader_never_skips_a_change_that_commits_later_with_a_lower_cursor(
    a_writes_first: bool,
) -> None:
    params = connection.settings_dict
    connect = {
        "dbname": params["NAME"],
        "user": params["USER"],
        "password": params["PASSWORD"] or None,
        "host": params["HOST"],
        "port": params["PORT"] or None,
    }
    with psycopg.connect(**connect) as writer_a, psycopg.connect(**connect) as writer_b:
        cursor_a = writer_a.cursor()
        # A's transaction is older than B's either way: it writes first (lower seq) or only
        # takes its transaction id first and writes after B has committed (higher seq).
        if a_writes_first:
            item_a = _item_insert(cursor_a)
        else:
            cursor_a.execute("SELECT pg_current_xact_id()")
        with writer_b.transaction():
            item_b = _item_insert(writer_b.cursor())
        if not a_writes_first:
            item_a = _item_insert(cursor_a)

        # B has committed, so a reader without the horizon would return it and move past A.
        assert ChangeLog.objects.filter(record_id=item_b).exists()
        assert list(changes_since(Cursor(), Q())) == []
        writer_a.commit()

    received = _read_all(Cursor(), expected=2)
    assert [change.record_id for change in received] == [item_a, item_b]
    seqs = {change.record_id: change.seq for change in received}
    assert (seqs[item_a] < seqs[item_b]) is a_writes_first
