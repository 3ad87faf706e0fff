"""Transfers between stores on one site: the inbound appears at once, exactly once."""

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from stores import services
from stores.models import Name, StockLine, Store, Transaction
from stores.services import LineInput
from stores.transfers import inbound_id, inbound_line_id, inbounds_make, store_name_id
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db

EXPIRY = datetime.date(2030, 1, 31)


@pytest.fixture
def stores() -> tuple[Store, Store]:
    """Two stores on this site (the master, no satellites): a warehouse and a clinic."""
    warehouse = services.store_create(code="WH", name="Regional warehouse")
    clinic = services.store_create(code="CL", name="Hill clinic")
    return warehouse, clinic


def received(warehouse: Store, item: object, quantity: int) -> None:
    """Put `quantity` of `item` batch B1 into `warehouse`'s stock."""
    receipt = services.transaction_create(
        store=warehouse,
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        date=datetime.date(2026, 11, 1),
        lines=[LineInput(item=item, batch="B1", expiry=EXPIRY, quantity=quantity)],  # type: ignore[arg-type]
    )
    services.transaction_finalise(record=receipt)


def sent(warehouse: Store, clinic: Store, quantities: list[int]) -> Transaction:
    """A finalised customer invoice from `warehouse` to `clinic`'s name: an outbound transfer."""
    items = [ItemFactory() for _ in quantities]
    for item, quantity in zip(items, quantities, strict=True):
        received(warehouse, item, quantity)
    outbound = services.transaction_create(
        store=warehouse,
        kind=Transaction.Kind.CUSTOMER_INVOICE,
        name=clinic.trading_name,
        date=datetime.date(2026, 11, 20),
        lines=[
            LineInput(
                item=item, batch="B1", expiry=EXPIRY, quantity=quantity, sell_price=Decimal("2.5")
            )
            for item, quantity in zip(items, quantities, strict=True)
        ],
    )
    return services.transaction_finalise(record=outbound)


def test_each_store_trades_under_a_name_of_its_own(stores: tuple[Store, Store]) -> None:
    warehouse, _ = stores
    name = Name.objects.get(store=warehouse)
    assert (name.pk, name.kind, name.code, name.name) == (
        store_name_id(warehouse.pk),
        Name.Kind.STORE,
        "WH",
        "Regional warehouse",
    )


def test_a_same_site_transfer_arrives_at_once_as_a_linked_draft(
    stores: tuple[Store, Store],
) -> None:
    warehouse, clinic = stores
    outbound = sent(warehouse, clinic, [30, 12])
    inbound = Transaction.objects.get(transfer_of=outbound)
    assert inbound.pk == inbound_id(outbound.pk)
    assert (inbound.store, inbound.kind, inbound.status, inbound.name) == (
        clinic,
        Transaction.Kind.SUPPLIER_INVOICE,
        Transaction.Status.DRAFT,
        warehouse.trading_name,
    )
    sent_lines = {line.pk: line for line in outbound.lines.all()}
    got = {line.pk: line for line in inbound.lines.all()}
    assert set(got) == {inbound_line_id(pk) for pk in sent_lines}
    for pk, line in sent_lines.items():
        copy = got[inbound_line_id(pk)]
        assert (copy.item_id, copy.batch, copy.expiry, copy.quantity, copy.cost_price) == (
            line.item_id,
            line.batch,
            line.expiry,
            line.quantity,
            line.sell_price,
        )
    # The goods left the warehouse; they are not yet at the clinic.
    assert not StockLine.objects.filter(store=warehouse, quantity__gt=0).exists()
    assert not StockLine.objects.filter(store=clinic).exists()
    assert inbounds_make(store_ids=[clinic.pk]) == []  # once, ever
    assert Transaction.objects.filter(store=clinic).count() == 1


def test_receiving_with_a_short_line_puts_what_arrived_into_stock(
    stores: tuple[Store, Store],
) -> None:
    warehouse, clinic = stores
    outbound = sent(warehouse, clinic, [30, 12])
    inbound = outbound.inbound
    lines = [LineInput.of(line) for line in inbound.lines.select_related("item").order_by("pk")]
    short = lines[0]
    lines[0] = LineInput(**{**short.__dict__, "quantity": short.quantity - 4})
    services.transaction_save(record=inbound, lines=lines)
    services.transaction_finalise(record=inbound)
    inbound.refresh_from_db()
    assert inbound.status == Transaction.Status.FINALISED
    assert inbound.received_on is not None
    on_hand = {s.item_id: s.quantity for s in StockLine.objects.filter(store=clinic)}
    assert on_hand == {line.item.pk: line.quantity for line in lines}
    assert sum(on_hand.values()) == 42 - 4


@pytest.mark.parametrize(
    "change",
    ["more than sent", "another item", "added line"],
)
def test_an_inbound_receives_only_what_was_sent(stores: tuple[Store, Store], change: str) -> None:
    warehouse, clinic = stores
    inbound = sent(warehouse, clinic, [10]).inbound
    (line,) = [LineInput.of(line) for line in inbound.lines.select_related("item")]
    if change == "more than sent":
        lines = [LineInput(**{**line.__dict__, "quantity": 11})]
    elif change == "another item":
        lines = [LineInput(**{**line.__dict__, "item": ItemFactory()})]
    else:
        lines = [line, LineInput(item=ItemFactory(), batch="X", expiry=EXPIRY, quantity=1)]
    with pytest.raises(ValidationError, match="inbound transfer|sent"):
        services.transaction_save(record=inbound, lines=lines)
    assert inbound.lines.get().quantity == 10


def test_an_inbound_transfer_cannot_be_deleted(stores: tuple[Store, Store]) -> None:
    warehouse, clinic = stores
    inbound = sent(warehouse, clinic, [5]).inbound
    with pytest.raises(ValidationError, match="cannot be deleted"):
        services.transaction_delete(record=inbound)
    assert Transaction.objects.filter(pk=inbound.pk).exists()


def test_an_invoice_to_an_ordinary_customer_is_no_transfer(stores: tuple[Store, Store]) -> None:
    warehouse, _ = stores
    item = ItemFactory()
    received(warehouse, item, 5)
    customer = services.name_create(code="C1", name="Walk-in", kind=Name.Kind.CUSTOMER)
    invoice = services.transaction_create(
        store=warehouse,
        kind=Transaction.Kind.CUSTOMER_INVOICE,
        name=customer,
        date=datetime.date(2026, 11, 20),
        lines=[LineInput(item=item, batch="B1", expiry=EXPIRY, quantity=5)],
    )
    services.transaction_finalise(record=invoice)
    assert not Transaction.objects.filter(transfer_of__isnull=False).exists()
