"""Master data is written only on the master; finalising moves stock and refuses negatives."""

import datetime

import pytest
from django.core.exceptions import ValidationError

from stores import services
from stores.models import Item, Name, StockLine, Store, Transaction
from sync.services import preferences_update
from tests.factories import ItemFactory, NameFactory, StoreFactory, TransactionLineFactory

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


def test_master_record_in_use_must_be_deactivated_not_deleted() -> None:
    used = TransactionLineFactory().item
    with pytest.raises(ValidationError, match="Deactivate it instead"):
        services.master_record_delete(record=used)
    assert Item.objects.filter(pk=used.pk).exists()


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
