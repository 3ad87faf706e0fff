"""Transfers between stores: a customer invoice to a store's name is an outbound transfer; once
it is finalised, the site hosting the receiving store makes its inbound transfer, a supplier
invoice linked to it, which the receiver corrects (breakage, short delivery) and finalises.

Every id here is derived from the outbound's: the inbound of outbound X is always the same
record, on every site, however often and wherever it is made, and the one-to-one link refuses
a second. So an outbound produces at most one inbound, ever: when the receiving site syncs
again, a pull is cut, the process making inbounds is killed (each inbound is made in one
transaction), or the site is rebuilt from empty (its re-initialisation brings back the inbound
it had pushed; one it had not is made again, the same record).
"""

import datetime
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from msupply.identity import hosted_store_ids

from .models import Name, Store, Transaction, TransactionLine

# Fixed for ever: every site derives the same ids from it.
TRANSFER_NAMESPACE = uuid.UUID("6f1c2a4e-8d3b-5c7a-9e10-2b4d6f8a0c1e")


def store_name_id(store_id: uuid.UUID) -> uuid.UUID:
    """The id of the name `store_id` trades under."""
    return uuid.uuid5(TRANSFER_NAMESPACE, f"store-name:{store_id}")


def inbound_id(outbound_id: uuid.UUID) -> uuid.UUID:
    """The id of the inbound transfer of outbound `outbound_id`."""
    return uuid.uuid5(TRANSFER_NAMESPACE, f"inbound:{outbound_id}")


def inbound_line_id(outbound_line_id: uuid.UUID) -> uuid.UUID:
    """The id of the inbound line that receives outbound line `outbound_line_id`."""
    return uuid.uuid5(TRANSFER_NAMESPACE, f"inbound-line:{outbound_line_id}")


def store_name_for(store: Store) -> Name:
    """The unsaved name a new store trades under (saved with the store, on the master)."""
    code = store.code
    if Name.objects.filter(code=code).exclude(store=store).exists():
        code = f"{store.code}~store"[: Name._meta.get_field("code").max_length]
    return Name(
        id=store_name_id(store.pk), code=code, name=store.name, kind=Name.Kind.STORE, store=store
    )


def outbound_transfers() -> QuerySet[Transaction]:
    """Customer invoices to a store's name, finalised: the goods are on their way or arrived."""
    return Transaction.objects.filter(
        kind=Transaction.Kind.CUSTOMER_INVOICE,
        status=Transaction.Status.FINALISED,
        name__store__isnull=False,
    )


def is_outbound_transfer(record: Transaction) -> bool:
    return (
        record.kind == Transaction.Kind.CUSTOMER_INVOICE
        and record.name_id is not None
        and Name.objects.filter(pk=record.name_id, store__isnull=False).exists()
    )


def transfers_routed_to(store_id: uuid.UUID) -> Q:
    """The transactions of other stores that the site hosting `store_id` must hold: outbound
    transfers to it, and the inbound transfers of its own outbounds (received elsewhere)."""
    return Q(pk__in=outbound_transfers().filter(name__store_id=store_id).values("pk")) | Q(
        pk__in=Transaction.objects.filter(
            transfer_of__store_id=store_id, status=Transaction.Status.FINALISED
        ).values("pk")
    )


def inbounds_make(*, store_ids: Iterable[uuid.UUID]) -> list[Transaction]:
    """Make the inbound transfer of every finalised outbound to one of `store_ids` (the stores
    hosted here) that has none yet; returns the ones made.

    Each inbound is made in its own transaction with its lines, or not at all. Made at the same
    moment elsewhere (two pushes integrating at once on the master), the one-to-one link and
    the derived id refuse the second, which is then skipped.
    """
    from .services import transaction_number_next

    pending = (
        outbound_transfers()
        .filter(name__store_id__in=list(store_ids), inbound__isnull=True)
        .select_related("name__store", "store")
        .order_by("date", "number")
    )
    made = []
    for outbound in pending:
        try:
            with transaction.atomic():
                made.append(_inbound_make(outbound, transaction_number_next))
        except IntegrityError:
            if Transaction.objects.filter(pk=inbound_id(outbound.pk)).exists():
                continue  # made meanwhile by another worker: the same record
            raise
    return made


def _inbound_make(outbound: Transaction, number_next: Callable[..., int]) -> Transaction:
    receiver = Store.objects.get(trading_name__transactions=outbound)
    sender_name = Name.objects.filter(store=outbound.store).first()
    inbound = Transaction(
        id=inbound_id(outbound.pk),
        store=receiver,
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        number=number_next(store=receiver),
        name=sender_name,
        date=outbound.date,
        status=Transaction.Status.DRAFT,
        transfer_of=outbound,
    )
    inbound.save(force_insert=True)
    TransactionLine.objects.bulk_create(
        [
            TransactionLine(
                id=inbound_line_id(line.pk),
                transaction=inbound,
                item_id=line.item_id,
                batch=line.batch,
                expiry=line.expiry,
                quantity=line.quantity,
                cost_price=line.sell_price,
                sell_price=0,
            )
            for line in outbound.lines.order_by("pk")
        ]
    )
    return inbound


def received_on_set(record: Transaction, today: datetime.date) -> None:
    """An inbound transfer notes the day it was received, as it is finalised."""
    if record.transfer_of_id is not None:
        record.received_on = today


def inbounds_waiting_here() -> QuerySet[Transaction]:
    """Inbound transfers to the stores this site hosts that wait, in draft, to be received."""
    return Transaction.objects.filter(
        transfer_of__isnull=False,
        status=Transaction.Status.DRAFT,
        store_id__in=hosted_store_ids(),
    )


@dataclass(frozen=True)
class TransferLine:
    """A line of an outbound transfer: what was sent and what its inbound held here receives."""

    item: str
    batch: str
    sent: int
    # None when this site holds no inbound; 0 when the receiver removed the line.
    received: int | None


def transfer_lines(outbound: Transaction) -> list[TransferLine]:
    """Each line of `outbound`, sent against received, as far as this site holds the inbound."""
    inbound = Transaction.objects.filter(transfer_of=outbound).first()
    received = dict(inbound.lines.values_list("id", "quantity")) if inbound is not None else {}
    return [
        TransferLine(
            item=str(line.item),
            batch=line.batch,
            sent=line.quantity,
            received=None if inbound is None else received.get(inbound_line_id(line.pk), 0),
        )
        for line in outbound.lines.select_related("item").order_by("item__code", "batch")
    ]
