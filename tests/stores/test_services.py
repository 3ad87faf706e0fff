"""Master data is written only on the master and deactivated, not deleted, once satellites may
hold it; transaction numbers never repeat; finalising moves stock and refuses negatives.
"""

import dataclasses
import datetime
from collections.abc import Callable

import pytest
from django.core.exceptions import ValidationError

from stores import services
from stores.models import Item, Name, NumberCounter, StockLine, Store, Transaction
from sync.models import ChangeLog, PeerState, SyncPeer
from sync.services import preferences_update
from tests.factories import (
    ItemFactory,
    NameFactory,
    PeerStateFactory,
    StoreFactory,
    TransactionFactory,
    TransactionLineFactory,
)

pytestmark = pytest.mark.django_db

EXPIRY = datetime.date(2028, 1, 31)


def line(item: Item, quantity: int, batch: str = "B1") -> services.LineInput:
    return services.LineInput(item=item, batch=batch, expiry=EXPIRY, quantity=quantity)


def test_master_creates_and_changes_master_data() -> None:
    item = services.item_create(code="AMX250", name="Amoxicillin 250 mg", unit="capsule")
    services.master_record_save(record=item, active=False)
    assert Item.objects.get(code="AMX250").active is False
    services.store_create(code="S9", name="Island Clinic")
    services.name_create(code="N9", name="Pharma Wholesale", kind=Name.Kind.SUPPLIER)
    assert Store.objects.filter(code="S9").exists()
    assert Name.objects.filter(code="N9").exists()


@pytest.mark.usefixtures("satellite")
@pytest.mark.parametrize(
    "create",
    [
        lambda: services.item_create(code="X", name="X", unit="tablet"),
        lambda: services.store_create(code="X", name="X"),
        lambda: services.name_create(code="X", name="X", kind=Name.Kind.CUSTOMER),
    ],
)
def test_satellite_cannot_add_master_data(create: object) -> None:
    with pytest.raises(services.MasterDataReadOnlyError, match="only .* on the master"):
        create()  # type: ignore[operator]
    assert not Item.objects.exists()
    assert not Store.objects.exists()
    assert not Name.objects.exists()


def test_satellite_cannot_change_or_delete_master_data() -> None:
    item = ItemFactory(name="Paracetamol 500 mg")
    preferences_update(sync_id=3)
    with pytest.raises(services.MasterDataReadOnlyError):
        services.master_record_save(record=item, name="Changed")
    with pytest.raises(services.MasterDataReadOnlyError):
        services.master_record_delete(record=item)
    with pytest.raises(services.MasterDataReadOnlyError):
        services.master_data_seed(stores=[], items=[Item(code="N", name="N", unit="u")], names=[])
    assert Item.objects.get().name == "Paracetamol 500 mg"


def first_logged(record: Store | Item | Name) -> tuple[int, int]:
    """The change-log position at which `record` was first logged (by the capture triggers)."""
    first = ChangeLog.objects.filter(record_id=record.pk).order_by("txid", "seq").first()
    assert first is not None
    return first.txid, first.seq


def served(position: tuple[int, int]) -> None:
    """Record that a satellite was served a pull page read at `position`."""
    PeerStateFactory(served_txid=position[0], served_seq=position[1])


MASTER_RECORD_FACTORIES = [StoreFactory, ItemFactory, NameFactory]


@pytest.mark.parametrize("factory", MASTER_RECORD_FACTORIES)
def test_master_record_no_pull_has_been_served_since_it_was_logged_is_deleted(
    factory: Callable[[], Store | Item | Name],
) -> None:
    record = factory()
    txid, seq = first_logged(record)
    served((txid, seq - 1))
    assert services.master_record_delete(record=record) == services.MasterRecordDeletion.DELETED
    assert not type(record).objects.filter(code=record.code).exists()


@pytest.mark.parametrize("factory", MASTER_RECORD_FACTORIES)
def test_master_record_a_satellite_may_hold_is_deactivated_not_deleted(
    factory: Callable[[], Store | Item | Name],
) -> None:
    record = factory()
    served(first_logged(record))
    outcome = services.master_record_delete(record=record)
    assert outcome == services.MasterRecordDeletion.DEACTIVATED
    assert type(record).objects.get(pk=record.pk).active is False


def test_a_deactivating_delete_retires_the_code_so_a_new_record_may_take_it() -> None:
    item = ItemFactory(code="AMOX-250")
    served(first_logged(item))
    services.master_record_delete(record=item)
    retired = Item.objects.get(pk=item.pk)
    assert retired.code == f"AMOX-250~{item.pk.hex[:6]}"
    assert services.item_create(code="AMOX-250", name="Amoxicillin", unit="tablet").active
    # Deleting it again keeps the same retired code.
    services.master_record_delete(record=retired)
    assert Item.objects.get(pk=item.pk).code == retired.code


def test_a_store_a_satellite_hosts_cannot_be_deleted_until_its_server_is_removed() -> None:
    store = StoreFactory(code="S007")
    SyncPeer.objects.create(sync_id=7, name="Clinic", store_code="S007", url="http://x.org/")
    with pytest.raises(ValidationError, match="remove that server from Sync with"):
        services.master_record_delete(record=store)
    assert Store.objects.get(pk=store.pk).active


def test_a_pull_served_after_the_record_was_logged_keeps_it_from_deletion() -> None:
    item = ItemFactory()
    txid, seq = first_logged(item)
    served((txid, seq - 1))
    served((txid + 1, 0))
    outcome = services.master_record_delete(record=item)
    assert outcome == services.MasterRecordDeletion.DEACTIVATED
    assert Item.objects.get(pk=item.pk).active is False


def test_master_record_with_no_satellite_at_all_is_deleted() -> None:
    item = ItemFactory()
    assert not PeerState.objects.exists()
    assert services.master_record_delete(record=item) == services.MasterRecordDeletion.DELETED
    assert not Item.objects.filter(pk=item.pk).exists()


def test_master_record_history_uses_is_deactivated_not_deleted() -> None:
    used = TransactionLineFactory().item
    assert services.master_record_delete(record=used) == services.MasterRecordDeletion.DEACTIVATED
    assert Item.objects.get(pk=used.pk).active is False


def test_deactivating_a_master_record_is_logged_as_an_upsert_so_it_syncs() -> None:
    item = ItemFactory()
    served(first_logged(item))
    start = ChangeLog.objects.order_by("-seq").values_list("seq", flat=True).first()
    services.master_record_delete(record=item)
    logged = ChangeLog.objects.filter(seq__gt=start, record_id=item.pk)
    assert list(logged.values_list("action", flat=True)) == ["upsert"]


def test_transactions_get_the_next_number_of_their_store() -> None:
    store, other = StoreFactory(), StoreFactory()
    item = ItemFactory()
    numbers = [
        services.transaction_create(
            store=target,
            kind=Transaction.Kind.SUPPLIER_INVOICE,
            date=EXPIRY,
            lines=[line(item, 5)],
        ).number
        for target in (store, store, other)
    ]
    assert numbers == [1, 2, 1]


def draft(store: Store, item: Item) -> Transaction:
    return services.transaction_create(
        store=store, kind=Transaction.Kind.SUPPLIER_INVOICE, date=EXPIRY, lines=[line(item, 5)]
    )


def test_deleting_the_newest_draft_leaves_a_gap_in_the_numbers() -> None:
    store, item = StoreFactory(), ItemFactory()
    draft(store, item)
    draft(store, item).delete()
    assert draft(store, item).number == 3


def test_numbers_pass_every_transaction_the_store_already_holds() -> None:
    """A satellite rebuilt from empty, or data from before the counter, gets no number twice."""
    store, item = StoreFactory(), ItemFactory()
    TransactionFactory(store=store, number=40)
    assert draft(store, item).number == 41
    TransactionFactory(store=store, number=70)
    assert draft(store, item).number == 71


def test_numbers_pass_the_counter_when_it_is_ahead_of_the_transactions() -> None:
    store, item = StoreFactory(), ItemFactory()
    NumberCounter.objects.create(store=store, last_number=500)
    TransactionFactory(store=store, number=12)
    assert draft(store, item).number == 501
    assert NumberCounter.objects.get(store=store).last_number == 501


def test_receiving_then_issuing_moves_stock() -> None:
    store, item = StoreFactory(), ItemFactory()
    supplier, customer = NameFactory(kind=Name.Kind.SUPPLIER), NameFactory()
    received = services.transaction_create(
        store=store,
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        date=EXPIRY,
        name=supplier,
        lines=[line(item, 100), line(item, 30, batch="B2")],
    )
    assert not StockLine.objects.exists()
    services.transaction_finalise(record=received)
    issued = services.transaction_create(
        store=store,
        kind=Transaction.Kind.CUSTOMER_INVOICE,
        date=EXPIRY,
        name=customer,
        lines=[line(item, 40)],
    )
    services.transaction_finalise(record=issued)
    on_hand = dict(StockLine.objects.values_list("batch", "quantity"))
    assert on_hand == {"B1": 60, "B2": 30}
    assert Transaction.objects.get(pk=issued.pk).status == Transaction.Status.FINALISED


def test_issuing_more_than_on_hand_is_refused_and_moves_nothing() -> None:
    store, item = StoreFactory(), ItemFactory(name="Oxytocin 10 IU/mL")
    services.transaction_finalise(
        record=services.transaction_create(
            store=store,
            kind=Transaction.Kind.SUPPLIER_INVOICE,
            date=EXPIRY,
            lines=[line(item, 10)],
        )
    )
    issue = services.transaction_create(
        store=store,
        kind=Transaction.Kind.CUSTOMER_INVOICE,
        date=EXPIRY,
        lines=[line(item, 4), line(item, 11)],
    )
    with pytest.raises(ValidationError, match="Cannot issue 15 of .*Oxytocin.*only 10 on hand"):
        services.transaction_finalise(record=issue)
    assert StockLine.objects.get().quantity == 10
    assert Transaction.objects.get(pk=issue.pk).status == Transaction.Status.DRAFT


def test_negative_adjustment_reduces_stock_but_not_below_zero() -> None:
    store, item = StoreFactory(), ItemFactory()
    services.transaction_finalise(
        record=services.transaction_create(
            store=store,
            kind=Transaction.Kind.INVENTORY_ADJUSTMENT,
            date=EXPIRY,
            lines=[line(item, 8)],
        )
    )
    services.transaction_finalise(
        record=services.transaction_create(
            store=store,
            kind=Transaction.Kind.INVENTORY_ADJUSTMENT,
            date=EXPIRY,
            lines=[line(item, -3)],
        )
    )
    assert StockLine.objects.get().quantity == 5
    too_much = services.transaction_create(
        store=store,
        kind=Transaction.Kind.INVENTORY_ADJUSTMENT,
        date=EXPIRY,
        lines=[line(item, -6)],
    )
    with pytest.raises(ValidationError, match="only 5 on hand"):
        services.transaction_finalise(record=too_much)


def test_invoice_lines_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="must be positive"):
        services.transaction_create(
            store=StoreFactory(),
            kind=Transaction.Kind.CUSTOMER_INVOICE,
            date=EXPIRY,
            lines=[line(ItemFactory(), -1)],
        )
    assert not Transaction.objects.exists()


def test_finalised_transaction_cannot_be_finalised_again() -> None:
    record = services.transaction_create(
        store=StoreFactory(),
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        date=EXPIRY,
        lines=[line(ItemFactory(), 3)],
    )
    services.transaction_finalise(record=record)
    with pytest.raises(ValidationError, match="already finalised"):
        services.transaction_finalise(record=record)
    assert StockLine.objects.get().quantity == 3


def test_saving_a_draft_changes_kept_lines_in_place_adds_new_ones_and_deletes_the_rest() -> None:
    store, item = StoreFactory(), ItemFactory()
    record = services.transaction_create(
        store=store,
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        date=EXPIRY,
        lines=[line(item, 3, "KEEP"), line(item, 4, "DROP")],
    )
    kept = record.lines.get(batch="KEEP")
    record.date = datetime.date(2026, 12, 1)

    services.transaction_save(
        record=record,
        lines=[
            dataclasses.replace(services.LineInput.of(kept), quantity=9),
            line(item, 2, "NEW"),
        ],
    )

    stored = Transaction.objects.get(pk=record.pk)
    assert (stored.date, stored.number, stored.status) == (record.date, 1, "draft")
    assert sorted(stored.lines.values_list("batch", "quantity")) == [("KEEP", 9), ("NEW", 2)]
    assert stored.lines.get(batch="KEEP").pk == kept.pk
    assert not StockLine.objects.exists()


def test_saving_a_draft_checks_every_line_against_its_new_kind() -> None:
    record = services.transaction_create(
        store=StoreFactory(),
        kind=Transaction.Kind.INVENTORY_ADJUSTMENT,
        date=EXPIRY,
        lines=[line(ItemFactory(), -2)],
    )
    record.kind = Transaction.Kind.CUSTOMER_INVOICE
    with pytest.raises(ValidationError, match="must be positive"):
        services.transaction_save(record=record)
    assert Transaction.objects.get(pk=record.pk).kind == Transaction.Kind.INVENTORY_ADJUSTMENT


def test_a_draft_cannot_move_to_another_store() -> None:
    record = draft(StoreFactory(), ItemFactory())
    record.store = StoreFactory()
    with pytest.raises(ValidationError, match="cannot move to another store"):
        services.transaction_save(record=record)


def test_a_line_of_another_transaction_cannot_be_changed_through_this_one() -> None:
    item = ItemFactory()
    record, other = draft(StoreFactory(), item), draft(StoreFactory(), item)
    foreign = services.LineInput.of(other.lines.get())
    with pytest.raises(ValidationError, match="not a line of"):
        services.transaction_save(record=record, lines=[foreign])
    assert other.lines.get().transaction_id == other.pk


def test_a_finalised_transaction_cannot_be_changed_or_deleted() -> None:
    record = services.transaction_create(
        store=StoreFactory(),
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        date=EXPIRY,
        lines=[line(ItemFactory(), 3)],
    )
    services.transaction_finalise(record=record)
    record.date = datetime.date(2026, 12, 1)
    with pytest.raises(ValidationError, match="finalised, so it can no longer be changed"):
        services.transaction_save(record=record)
    with pytest.raises(ValidationError, match="finalised, so it can no longer be changed"):
        services.transaction_delete(record=record)
    assert Transaction.objects.get(pk=record.pk).date == EXPIRY
    assert StockLine.objects.get().quantity == 3


def test_deleting_a_draft_deletes_its_lines_and_moves_no_stock() -> None:
    record = draft(StoreFactory(), ItemFactory())
    services.transaction_delete(record=record)
    assert not Transaction.objects.exists()
    assert not StockLine.objects.exists()


def test_finalising_refuses_a_negative_invoice_line_that_no_service_wrote() -> None:
    record = TransactionFactory(kind=Transaction.Kind.CUSTOMER_INVOICE)
    TransactionLineFactory(transaction=record, quantity=-5)
    with pytest.raises(ValidationError, match="must be positive"):
        services.transaction_finalise(record=record)
    assert Transaction.objects.get(pk=record.pk).status == Transaction.Status.DRAFT
    assert not StockLine.objects.exists()
