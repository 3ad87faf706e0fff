"""Applying changesets in foreign-key order, idempotently, buffering orphans; building them."""

import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Max, Model
from django.test.utils import CaptureQueriesContext

from stores.models import Item, Name, StockLine, Store, Transaction, TransactionLine
from sync.changes import ChangeSet, changeset_build
from sync.integration import changeset_apply
from sync.models import BufferedRecord, ChangeLog
from sync.registry import TABLES_BY_NAME
from tests.factories import (
    BufferedRecordFactory,
    ItemFactory,
    NameFactory,
    StockLineFactory,
    StoreFactory,
    TransactionFactory,
    TransactionLineFactory,
    changeset_of,
)

pytestmark = pytest.mark.django_db

SYNCED_MODELS = (Store, Item, Name, Transaction, TransactionLine, StockLine)


def rows() -> dict[type[Model], list[dict[str, object]]]:
    """Every synced row, to compare the database before and after."""
    return {model: list(model.objects.order_by("pk").values()) for model in SYNCED_MODELS}


def last_seq() -> int:
    return ChangeLog.objects.aggregate(last=Max("seq"))["last"] or 0


def test_children_sent_before_their_parents_still_apply() -> None:
    store, item = StoreFactory.build(), ItemFactory.build()
    invoice = TransactionFactory.build(store=store, name=None)
    line = TransactionLineFactory.build(transaction=invoice, item=item)
    stock = StockLineFactory.build(store=store, item=item)
    changeset = ChangeSet.from_wire(changeset_of(line, stock, invoice, item, store).to_wire())
    assert list(changeset.upserts)[0] == "stores_transactionline"

    result = changeset_apply(changeset=changeset, source_site=2)

    assert (result.applied, result.buffered) == (5, 0)
    assert TransactionLine.objects.get(pk=line.pk).transaction.store == store
    assert StockLine.objects.get(pk=stock.pk).item == item


def test_line_without_its_transaction_waits_in_the_buffer_and_applies_when_it_arrives() -> None:
    store, item = StoreFactory(), ItemFactory()
    missing = TransactionFactory.build(store=store, name=None)
    waiting = TransactionLineFactory.build(transaction=missing, item=item)
    complete = TransactionFactory.build(store=store, name=None)
    complete_line = TransactionLineFactory.build(transaction=complete, item=item)

    first = changeset_apply(changeset=changeset_of(waiting, complete, complete_line), source_site=2)

    assert (first.applied, first.buffered) == (2, 1)
    assert TransactionLine.objects.filter(pk=complete_line.pk).exists()
    assert not TransactionLine.objects.filter(pk=waiting.pk).exists()
    buffered = BufferedRecord.objects.get()
    assert (buffered.table_name, buffered.record_id, buffered.source_site) == (
        "stores_transactionline",
        waiting.pk,
        2,
    )
    assert f"transaction_id {missing.pk}" in buffered.error

    second = changeset_apply(changeset=changeset_of(missing), source_site=2)

    assert (second.applied, second.buffered) == (2, 0)
    assert TransactionLine.objects.get(pk=waiting.pk).transaction_id == missing.pk
    assert not BufferedRecord.objects.exists()
    assert ChangeLog.objects.get(record_id=waiting.pk).source_site == 2


def test_deletes_run_children_first_whatever_order_they_are_sent_in() -> None:
    line = TransactionLineFactory()
    invoice, item = line.transaction, line.item
    stock = StockLineFactory(store=invoice.store, item=item)
    start = last_seq()

    changeset_apply(
        changeset=changeset_of(deleted=(invoice.store, item, invoice, line, stock)),
        source_site=2,
    )

    for record in (invoice.store, item, invoice, line, stock):
        assert not type(record).objects.filter(pk=record.pk).exists()
    deleted_tables = list(
        ChangeLog.objects.filter(seq__gt=start).order_by("seq").values_list("table_name", "action")
    )
    assert deleted_tables == [
        ("stores_stockline", "delete"),
        ("stores_transactionline", "delete"),
        ("stores_transaction", "delete"),
        ("stores_item", "delete"),
        ("stores_store", "delete"),
    ]


def test_reapplying_a_changeset_changes_nothing() -> None:
    store, item = StoreFactory.build(), ItemFactory.build()
    invoice = TransactionFactory.build(store=store, name=None)
    line = TransactionLineFactory.build(transaction=invoice, item=item)
    orphan = TransactionLineFactory.build(
        transaction=TransactionFactory.build(store=store, name=None), item=item
    )
    gone = ItemFactory()
    changeset = changeset_of(store, item, invoice, line, orphan, deleted=(gone,))

    first = changeset_apply(changeset=changeset, source_site=2)
    after_first = rows()
    buffered_first = list(BufferedRecord.objects.values_list("table_name", "record_id", "row"))
    second = changeset_apply(changeset=changeset, source_site=2)

    assert (first.applied, first.buffered) == (second.applied, second.buffered) == (5, 1)
    assert rows() == after_first
    assert (
        list(BufferedRecord.objects.values_list("table_name", "record_id", "row")) == buffered_first
    )


def test_changeset_build_sends_a_record_changed_many_times_once_with_its_latest_values() -> None:
    start = last_seq()
    item = ItemFactory(name="Amoxicillin 250 mg")
    Item.objects.filter(pk=item.pk).update(name="Amoxicillin 500 mg")
    Item.objects.filter(pk=item.pk).update(unit="tablet")
    changes = list(ChangeLog.objects.filter(seq__gt=start))
    assert len(changes) == 3

    changeset = changeset_build((c.table_name, c.record_id, c.action) for c in changes)

    assert len(changeset) == 1
    [row] = changeset.upserts["stores_item"]
    sent = dict(zip(TABLES_BY_NAME["stores_item"].field_names, row, strict=True))
    assert (sent["id"], sent["name"], sent["unit"]) == (item.pk.hex, "Amoxicillin 500 mg", "tablet")


def test_changeset_build_sends_a_record_deleted_since_only_as_its_tombstone() -> None:
    start = last_seq()
    kept, deleted = ItemFactory.create_batch(2)
    deleted_id = deleted.pk
    deleted.delete()

    changeset = changeset_build(
        ChangeLog.objects.filter(seq__gt=start).values_list("table_name", "record_id", "action")
    )

    assert [row[0] for row in changeset.upserts["stores_item"]] == [kept.pk.hex]
    assert changeset.deletes == {"stores_item": [deleted_id]}


def test_changeset_build_leaves_out_a_record_deleted_after_its_changes_were_read() -> None:
    start = last_seq()
    item = ItemFactory()
    changes = list(ChangeLog.objects.filter(seq__gt=start))
    item.delete()

    changeset = changeset_build((c.table_name, c.record_id, c.action) for c in changes)

    assert len(changeset) == 0
    assert changeset.to_wire() == {"upserts": [], "deletes": []}


def wire(changeset: ChangeSet) -> ChangeSet:
    """`changeset` as the receiving site reads it off the wire."""
    return ChangeSet.from_wire(changeset.to_wire())


def codes() -> dict[object, str]:
    return dict(Item.objects.values_list("pk", "code"))


def test_items_that_swapped_codes_apply_in_one_page() -> None:
    first, second = ItemFactory(code="A1"), ItemFactory(code="B2")
    first.code, second.code = "B2", "A1"
    changeset_apply(changeset=wire(changeset_of(first, second)), source_site=1)
    assert codes() == {first.pk: "B2", second.pk: "A1"}


def test_a_swap_split_across_pages_moves_the_code_aside_until_its_owner_arrives() -> None:
    first, second = ItemFactory(code="A1"), ItemFactory(code="B2")
    first.code, second.code = "B2", "A1"
    changeset_apply(changeset=wire(changeset_of(first)), source_site=1)
    held = codes()
    assert held[first.pk] == "B2"
    assert held[second.pk].startswith("~")
    changeset_apply(changeset=wire(changeset_of(second)), source_site=1)
    assert codes() == {first.pk: "B2", second.pk: "A1"}


def test_a_code_freed_by_a_delete_is_taken_by_a_new_item_in_the_same_page() -> None:
    old = ItemFactory(code="A1")
    new = ItemFactory.build(code="A1")
    changeset_apply(changeset=wire(changeset_of(new, deleted=(old,))), source_site=1)
    assert codes() == {new.pk: "A1"}


def test_a_recoded_item_and_a_new_one_with_its_old_code_apply_in_either_order() -> None:
    old = ItemFactory(code="A1")
    old.code = "A1-OLD"
    new = ItemFactory.build(code="A1")
    changeset_apply(changeset=wire(changeset_of(new, old)), source_site=1)
    assert codes() == {new.pk: "A1", old.pk: "A1-OLD"}


def test_a_number_set_aside_goes_past_both_the_stores_and_the_pages_numbers() -> None:
    store = StoreFactory()
    held = TransactionFactory(store=store, number=5)
    incoming = [TransactionFactory.build(store=store, name=None, number=n) for n in (5, 6)]
    changeset_apply(changeset=wire(changeset_of(*incoming)), source_site=2)
    assert Transaction.objects.get(pk=held.pk).number == 7
    assert sorted(Transaction.objects.values_list("number", flat=True)) == [5, 6, 7]


def test_a_pulled_delete_of_an_item_local_history_uses_deactivates_it() -> None:
    line = TransactionLineFactory()
    unused = ItemFactory()
    deleted = (line.item, unused)
    changeset_apply(changeset=wire(changeset_of(deleted=deleted)), source_site=1)
    assert Item.objects.get(pk=line.item_id).active is False
    assert not Item.objects.filter(pk=unused.pk).exists()


def test_a_deleted_record_held_again_travels_as_it_is_not_as_a_tombstone() -> None:
    item = ItemFactory()
    changeset = changeset_build(
        [("stores_item", item.pk, "upsert"), ("stores_item", item.pk, "delete")]
    )
    assert (changeset.deletes, [row[0] for row in changeset.upserts["stores_item"]]) == (
        {},
        [item.pk.hex],
    )


def orphan_lines(count: int, item: Item, store: Store) -> list[TransactionLine]:
    """`count` unsaved lines, each of its own unsaved transaction of `store`."""
    return [
        TransactionLineFactory.build(
            transaction=TransactionFactory.build(store=store, name=None), item=item
        )
        for _ in range(count)
    ]


@pytest.fixture
def buffer_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one for every buffered record read from the database."""
    reads: list[int] = []
    from_db = BufferedRecord.from_db

    def counted(db: str | None, field_names: list[str], values: list[object]) -> BufferedRecord:
        reads.append(1)
        return from_db(db, field_names, values)

    monkeypatch.setattr(BufferedRecord, "from_db", counted)
    return reads


def test_a_buffered_record_names_the_parent_it_awaits() -> None:
    line = orphan_lines(1, ItemFactory(), StoreFactory())[0]

    changeset_apply(changeset=changeset_of(line), source_site=1)

    buffered = BufferedRecord.objects.get()
    assert (buffered.awaited_table, buffered.awaited_id) == (
        "stores_transaction",
        line.transaction_id,
    )


def test_a_parent_arriving_retries_only_its_own_child_of_a_thousand_waiting(
    buffer_reads: list[int],
) -> None:
    store, item = StoreFactory(), ItemFactory()
    unrelated = orphan_lines(1000, item, store)
    waiting = orphan_lines(1, item, store)[0]
    changeset_apply(changeset=changeset_of(*unrelated, waiting), source_site=1)
    before = list(BufferedRecord.objects.exclude(record_id=waiting.pk).order_by("pk").values())
    buffer_reads.clear()

    with CaptureQueriesContext(connection) as queries:
        result = changeset_apply(
            changeset=changeset_of(waiting.transaction, ItemFactory.build()), source_site=1
        )

    assert (result.applied, result.buffered, result.buffer_read) == (3, 1000, 1)
    assert len(buffer_reads) == 1
    assert TransactionLine.objects.filter(pk=waiting.pk).exists()
    assert list(BufferedRecord.objects.order_by("pk").values()) == before
    # Bounded by what arrived, not by the buffer: a fixed handful of statements.
    assert len(queries) < 40, [q["sql"] for q in queries]


def test_a_page_that_releases_nothing_reads_no_buffered_record(buffer_reads: list[int]) -> None:
    store, item = StoreFactory(), ItemFactory()
    changeset_apply(changeset=changeset_of(*orphan_lines(200, item, store)), source_site=1)
    buffer_reads.clear()

    result = changeset_apply(changeset=changeset_of(*ItemFactory.build_batch(5)), source_site=1)

    assert (result.applied, result.buffered, result.buffer_read) == (5, 200, 0)
    assert buffer_reads == []


def test_a_released_parent_releases_its_own_children_in_turn() -> None:
    store, item = StoreFactory.build(), ItemFactory()
    line = orphan_lines(1, item, store)[0]
    invoice = line.transaction

    first = changeset_apply(changeset=changeset_of(line, invoice), source_site=1)

    assert (first.applied, first.buffered) == (0, 2)
    awaited = dict(BufferedRecord.objects.values_list("record_id", "awaited_id"))
    assert awaited == {line.pk: invoice.pk, invoice.pk: store.pk}

    second = changeset_apply(changeset=changeset_of(store), source_site=1)

    assert (second.applied, second.buffered, second.buffer_read) == (3, 0, 2)
    assert TransactionLine.objects.get(pk=line.pk).transaction.store_id == store.pk


def test_a_retried_record_missing_another_parent_now_awaits_that_one() -> None:
    store, item = StoreFactory(), ItemFactory.build()
    line = orphan_lines(1, item, store)[0]
    changeset_apply(changeset=changeset_of(line), source_site=1)
    assert BufferedRecord.objects.get().awaited_id == line.transaction_id

    middle = changeset_apply(changeset=changeset_of(line.transaction), source_site=1)

    assert (middle.applied, middle.buffered, middle.buffer_read) == (1, 1, 1)
    buffered = BufferedRecord.objects.get()
    assert (buffered.awaited_table, buffered.awaited_id) == ("stores_item", item.pk)
    assert f"item_id {item.pk}" in buffered.error

    last = changeset_apply(changeset=changeset_of(item), source_site=1)

    assert (last.applied, last.buffered, last.buffer_read) == (2, 0, 1)


def test_records_buffered_before_they_named_a_parent_are_retried_once(
    buffer_reads: list[int],
) -> None:
    store, item = StoreFactory(), ItemFactory()
    arrived, still_missing = orphan_lines(2, item, store)
    TransactionFactory(pk=arrived.transaction_id, store=store, name=None)
    changeset_apply(changeset=changeset_of(still_missing), source_site=1)
    BufferedRecordFactory(
        record_id=arrived.pk, row=changeset_of(arrived).upserts["stores_transactionline"][0]
    )
    BufferedRecord.objects.update(awaited_table="", awaited_id=None)

    first = changeset_apply(changeset=changeset_of(ItemFactory.build()), source_site=1)

    assert (first.applied, first.buffered, first.buffer_read) == (2, 1, 2)
    assert TransactionLine.objects.filter(pk=arrived.pk).exists()
    assert BufferedRecord.objects.get().awaited_id == still_missing.transaction_id
    buffer_reads.clear()
    second = changeset_apply(changeset=changeset_of(ItemFactory.build()), source_site=1)
    assert (second.buffer_read, buffer_reads) == (0, [])


def test_buffer_queries_split_their_ids_to_fit_the_databases_parameter_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, item = StoreFactory(), ItemFactory()
    lines = orphan_lines(10, item, store)
    changeset_apply(changeset=changeset_of(*lines), source_site=1)
    monkeypatch.setattr(connection.features, "max_query_params", 4)

    with CaptureQueriesContext(connection) as queries:
        result = changeset_apply(
            changeset=changeset_of(*(line.transaction for line in lines)), source_site=1
        )

    assert (result.applied, result.buffered, result.buffer_read) == (20, 0, 10)
    if connection.vendor == "sqlite":
        reads = [q for q in queries if q["sql"].startswith('SELECT "sync_bufferedrecord"')]
        assert len(reads) > 1


def test_a_page_with_every_column_type_round_trips_exactly() -> None:
    store = StoreFactory(code="S" * 20, name="店" * 200)
    item = ItemFactory(code="é" * 30, name="ü" * 200, unit="𝄞" * 30, active=False)
    customer = NameFactory(kind=Name.Kind.CUSTOMER, store=None)
    invoice = TransactionFactory(
        store=store,
        name=customer,
        kind=Transaction.Kind.INVENTORY_ADJUSTMENT,
        number=2**31 - 1,
        date=datetime.date(2026, 2, 28),
    )
    records = [
        store,
        item,
        customer,
        invoice,
        TransactionLineFactory(
            transaction=invoice,
            item=item,
            batch="Б" * 50,
            expiry=datetime.date(9999, 12, 31),
            quantity=-(2**31),
            cost_price=Decimal("9999999999.99"),
            sell_price=Decimal("-0.01"),
        ),
        StockLineFactory(store=store, item=item, quantity=2**31 - 1),
    ]
    expected = rows()
    everything = [
        (model._meta.db_table, row["id"], "upsert")
        for model, held in expected.items()
        for row in held
    ]
    sent = wire(changeset_build(everything))
    for model in reversed(SYNCED_MODELS):
        model.objects.all().delete()

    result = changeset_apply(changeset=sent, source_site=1)

    assert result.applied == len(everything) >= len(records)
    assert rows() == expected
    assert rows()[Transaction][0]["name_id"] == customer.pk
    assert rows()[Transaction][0]["transfer_of_id"] is None
