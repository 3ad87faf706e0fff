"""Write paths for master data and transactions; every user-facing change goes through here."""

import datetime
import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.db.models import Max, ProtectedError
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from msupply.acting_user import Actor, changes_by
from msupply.identity import (
    master_record_may_be_held,
    site_is_master,
    site_sync_id,
    store_hosting_peer,
    store_is_hosted_here,
)

from .models import Item, Name, NumberCounter, StockLine, Store, Transaction, TransactionLine
from .transfers import inbound_line_id, inbounds_make, received_on_set, store_name_for


class MasterDataReadOnlyError(PermissionDenied):
    """Raised when master data is written anywhere but on the master server."""


MasterRecord = TypeVar("MasterRecord", Store, Item, Name)


def master_data_ensure_writable() -> None:
    """Refuse master-data writes on a satellite, as the seed document requires."""
    if not site_is_master():
        raise MasterDataReadOnlyError(
            _(
                "Items, names and stores can only be added, changed or deleted on the master "
                "server (Sync ID 1). This server is satellite %(sync_id)s: make the change on the "
                "master and it will arrive here at the next sync."
            )
            % {"sync_id": site_sync_id()}
        )


class StoreNotHostedHereError(PermissionDenied):
    """Raised when a store's transactions are written on a site that does not host the store."""


def store_data_ensure_writable(*, store: Store) -> None:
    """Refuse transaction and stock writes for a store that another site hosts."""
    if not store_is_hosted_here(store.pk):
        raise StoreNotHostedHereError(
            _(
                "Store %(store)s is hosted by another server: its transactions and stock are "
                "entered there and reach this server by synchronisation."
            )
            % {"store": store}
        )


@transaction.atomic
def master_record_save(*, record: MasterRecord, by: Actor = None, **changes: Any) -> MasterRecord:
    """Create or change a store, item or name on the master after full validation; the change
    log records `by` as the user who did it."""
    master_data_ensure_writable()
    for field, value in changes.items():
        setattr(record, field, value)
    master_record_validate(record=record)
    with changes_by(by):
        record.save()
    return record


def master_record_validate(*, record: MasterRecord, unique: bool = True) -> None:
    """Check the rules every store, item or name meets before it is written (the model's full
    validation); `unique=False` leaves the unique checks to a caller that makes them for a whole
    file at once (stores.resources)."""
    record.full_clean(validate_unique=unique)


@transaction.atomic
def store_create(*, code: str, name: str, by: Actor = None) -> Store:
    """Add a store on the master, with the name it trades under (stores.transfers)."""
    store = master_record_save(record=Store(), by=by, code=code, name=name)
    master_record_save(record=store_name_for(store), by=by)
    return store


def item_create(*, code: str, name: str, unit: str, by: Actor = None) -> Item:
    """Add an item on the master."""
    return master_record_save(record=Item(), by=by, code=code, name=name, unit=unit)


def name_create(*, code: str, name: str, kind: str, by: Actor = None) -> Name:
    """Add a customer or supplier on the master."""
    return master_record_save(record=Name(), by=by, code=code, name=name, kind=kind)


class MasterRecordDeletion(models.TextChoices):
    """What deleting a master record did, so the caller can tell the user the truth."""

    DELETED = "deleted", "Deleted"
    DEACTIVATED = "deactivated", "Deactivated"


@transaction.atomic
def master_record_delete(*, record: MasterRecord, by: Actor = None) -> MasterRecordDeletion:
    """Delete a master record on the master, or deactivate it if a satellite may hold it or
    local history points at it.

    A satellite whose transactions use a record could not apply its delete, and sync would stop
    there; an inactive record stays in history, still syncs, and can no longer be chosen. Its
    code is retired (suffixed with its id), so a new record may take the code, as it could
    after a real delete. The change log records `by` as the user who did it.
    """
    master_data_ensure_writable()
    if isinstance(record, Store) and (peer := store_hosting_peer(code=record.code)):
        raise ValidationError(
            _(
                "Store %(store)s is hosted by satellite %(peer)s: remove that server from Sync "
                "with first (Preferences > Synchronisation), then delete the store."
            )
            % {"store": record, "peer": peer}
        )
    if not master_record_may_be_held(table_name=record._meta.db_table, record_id=record.pk):
        try:
            with changes_by(by):
                record.delete()
        except ProtectedError:
            pass
        else:
            return MasterRecordDeletion.DELETED
    master_record_save(record=record, by=by, active=False, code=retired_code(record))
    return MasterRecordDeletion.DEACTIVATED


def retired_code(record: Store | Item | Name) -> str:
    """The code a deleted-but-kept record carries: its own, then "~" and part of its id."""
    suffix = f"~{record.pk.hex[:6]}"
    if record.code.endswith(suffix):
        return record.code
    length = record._meta.get_field("code").max_length or 20
    return record.code[: length - len(suffix)] + suffix


@dataclass(frozen=True)
class LineInput:
    """One line of a transaction as a user enters it."""

    item: Item
    batch: str
    expiry: datetime.date
    quantity: int
    cost_price: Decimal = Decimal("0")
    sell_price: Decimal = Decimal("0")
    # The line this one changes; None adds a line.
    id: uuid.UUID | None = None

    @classmethod
    def of(cls, line: TransactionLine) -> "LineInput":
        """The input that leaves `line` as it is."""
        return cls(
            item=line.item,
            batch=line.batch,
            expiry=line.expiry,
            quantity=line.quantity,
            cost_price=line.cost_price,
            sell_price=line.sell_price,
            id=None if line._state.adding else line.pk,
        )


# How each kind of transaction moves stock when it is finalised.
STOCK_DIRECTION = {
    Transaction.Kind.SUPPLIER_INVOICE: 1,
    Transaction.Kind.CUSTOMER_INVOICE: -1,
    Transaction.Kind.INVENTORY_ADJUSTMENT: 1,
}


@transaction.atomic
def transaction_number_next(*, store: Store) -> int:
    """Hand out the next transaction number of `store`, locking the store row until commit.

    The store's counter never goes back, so a deleted draft leaves a gap and its number is never
    reused (a reused number would reach the master as one record's delete and another's upsert).
    Numbers also pass every transaction the store holds: a satellite rebuilt from empty, or data
    from before the counter, never gets a number it already has.
    """
    locked_store = Store.objects.select_for_update().get(pk=store.pk)
    counter, _ = NumberCounter.objects.get_or_create(store=locked_store)
    held = locked_store.transactions.aggregate(last=Max("number"))["last"] or 0
    counter.last_number = max(counter.last_number, held) + 1
    counter.save(update_fields=["last_number"])
    return counter.last_number


def transaction_create(
    *,
    store: Store,
    kind: str,
    date: datetime.date,
    lines: list[LineInput],
    name: Name | None = None,
) -> Transaction:
    """Create a draft transaction with the next number of its store and its lines."""
    record = Transaction(store=store, kind=kind, name=name, date=date)
    return transaction_save(record=record, lines=lines)


@transaction.atomic
def transaction_save(*, record: Transaction, lines: list[LineInput] | None = None) -> Transaction:
    """Add `record` as a draft numbered by its store, or change a draft, with all its lines.

    `lines` is the whole transaction: a line with an id changes that line, one without is added,
    and the draft's other lines are deleted; None keeps the lines as they are. A finalised
    transaction is read-only, and a draft stays in its store, keeping its number and status.
    """
    if record._state.adding:
        if lines is None:
            lines = []
        transaction_lines_validate(kind=record.kind, lines=lines)
        store_data_ensure_writable(store=record.store)
        record.number = transaction_number_next(store=record.store)
        record.status = Transaction.Status.DRAFT
    else:
        stored = Transaction.objects.select_for_update().select_related("store").get(pk=record.pk)
        store_data_ensure_writable(store=stored.store)
        _draft_ensure(stored)
        if record.store_id != stored.store_id:
            raise ValidationError(
                _(
                    "%(transaction)s belongs to %(store)s: a transaction cannot move to another "
                    "store. Delete the draft and enter it in the other store."
                )
                % {"transaction": stored, "store": stored.store}
            )
        if lines is None:
            lines = [LineInput.of(line) for line in stored.lines.select_related("item")]
        transaction_lines_validate(kind=record.kind, lines=lines)
        record.number, record.status = stored.number, stored.status
        if stored.transfer_of_id is not None:
            _inbound_changes_check(stored, record, lines)
            record.transfer_of_id = stored.transfer_of_id
    record.full_clean()
    record.save()
    _lines_save(record=record, lines=lines)
    return record


def _inbound_changes_check(
    stored: Transaction, record: Transaction, lines: list[LineInput]
) -> None:
    """An inbound transfer's receiver corrects received quantities (down to what arrived) or
    removes a line that did not arrive; the rest is what the sender sent."""
    if (record.kind, record.name_id, record.date) != (stored.kind, stored.name_id, stored.date):
        raise ValidationError(
            _(
                "%(transaction)s is an inbound transfer: its kind, supplier and date are the "
                "sender's. Only the received quantities can be corrected."
            )
            % {"transaction": stored}
        )
    sent = {line.pk: line for line in stored.lines.all()}
    outbound_lines = TransactionLine.objects.filter(transaction__inbound=stored)
    sent_quantity = {inbound_line_id(line.pk): line.quantity for line in outbound_lines}
    for line in lines:
        was = sent.get(line.id) if line.id is not None else None
        if was is None:
            raise ValidationError(
                _(
                    "%(transaction)s is an inbound transfer: it receives the lines that were "
                    "sent, so a line cannot be added to it."
                )
                % {"transaction": stored}
            )
        if (line.item.pk, line.batch, line.expiry, line.cost_price) != (
            was.item_id,
            was.batch,
            was.expiry,
            was.cost_price,
        ):
            raise ValidationError(
                _(
                    "%(transaction)s is an inbound transfer: a line's item, batch, expiry and "
                    "cost are the sender's. Only the received quantity can be corrected."
                )
                % {"transaction": stored}
            )
        most = sent_quantity.get(was.pk, was.quantity)
        if line.quantity > most:
            raise ValidationError(
                _(
                    "%(item)s batch %(batch)s: %(received)s received is more than the %(sent)s "
                    "sent. Receive at most what was sent."
                )
                % {"item": line.item, "batch": line.batch, "received": line.quantity, "sent": most}
            )


def _draft_ensure(record: Transaction) -> None:
    if record.status != Transaction.Status.DRAFT:
        raise ValidationError(
            _(
                "%(transaction)s of %(store)s is finalised, so it can no longer be changed or "
                "deleted: its stock has moved. Enter an inventory adjustment to correct stock."
            )
            % {"transaction": record, "store": record.store}
        )


LINE_FIELDS = ["item", "batch", "expiry", "quantity", "cost_price", "sell_price"]


def _lines_save(*, record: Transaction, lines: list[LineInput]) -> None:
    stored = {line.pk: line for line in record.lines.select_related("item")}
    kept = {line.id for line in lines if line.id is not None}
    if kept - stored.keys():
        raise ValidationError(
            _("A line given to change is not a line of %(transaction)s.") % {"transaction": record}
        )
    record.lines.exclude(pk__in=kept).delete()
    changed, added = [], []
    for line in lines:
        values = {name: getattr(line, name) for name in LINE_FIELDS}
        if line.id is None:
            added.append(TransactionLine(transaction=record, **values))
            continue
        stored_line = stored[line.id]
        if any(getattr(stored_line, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(stored_line, name, value)
            changed.append(stored_line)
    # Only lines that really changed are written, so sync sends no copies of unchanged ones.
    TransactionLine.objects.bulk_update(changed, LINE_FIELDS)
    TransactionLine.objects.bulk_create(added)


@transaction.atomic
def transaction_delete(*, record: Transaction) -> None:
    """Delete a draft and its lines; a finalised transaction is read-only, and an inbound
    transfer is received, never deleted (it would only be made again)."""
    stored = Transaction.objects.select_for_update().select_related("store").get(pk=record.pk)
    store_data_ensure_writable(store=stored.store)
    _draft_ensure(stored)
    if stored.transfer_of_id is not None:
        raise ValidationError(
            _(
                "%(transaction)s of %(store)s is an inbound transfer: it cannot be deleted. "
                "Correct the received quantities (or remove a line that did not arrive) and "
                "finalise it."
            )
            % {"transaction": stored, "store": stored.store}
        )
    stored.delete()


def transaction_lines_validate(*, kind: str, lines: list[LineInput]) -> None:
    """Refuse a transaction without lines, a zero quantity, or a negative one on an invoice."""
    if not lines:
        raise ValidationError(_("A transaction needs at least one line."))
    for line in lines:
        if line.quantity == 0:
            raise ValidationError(
                _("The quantity of %(item)s batch %(batch)s is zero.")
                % {"item": line.item, "batch": line.batch}
            )
        if kind != Transaction.Kind.INVENTORY_ADJUSTMENT and line.quantity < 0:
            raise ValidationError(
                _(
                    "Invoice quantities must be positive: %(item)s batch %(batch)s has "
                    "%(quantity)s. Use an inventory adjustment to reduce stock."
                )
                % {"item": line.item, "batch": line.batch, "quantity": line.quantity}
            )


StockKey = tuple[Any, str, datetime.date]


@transaction.atomic
def transaction_finalise(*, record: Transaction) -> Transaction:
    """Finalise a draft and move its stock, refusing to issue more than is on hand."""
    record = Transaction.objects.select_for_update().select_related("store").get(pk=record.pk)
    store_data_ensure_writable(store=record.store)
    if record.status == Transaction.Status.FINALISED:
        raise ValidationError(
            _("%(transaction)s of %(store)s is already finalised.")
            % {"transaction": record, "store": record.store}
        )
    lines = list(record.lines.select_related("item"))
    # A draft may hold lines that no service wrote (an older admin, a direct edit): the
    # rules are checked again before stock moves.
    transaction_lines_validate(kind=record.kind, lines=[LineInput.of(line) for line in lines])
    direction = STOCK_DIRECTION[Transaction.Kind(record.kind)]
    deltas: dict[StockKey, int] = defaultdict(int)
    names: dict[StockKey, str] = {}
    for line in lines:
        key = (line.item_id, line.batch, line.expiry)
        deltas[key] += direction * line.quantity
        names[key] = str(line.item)
    stock = {
        (stock_line.item_id, stock_line.batch, stock_line.expiry): stock_line
        for stock_line in StockLine.objects.select_for_update().filter(
            store=record.store, item_id__in={key[0] for key in deltas}
        )
    }
    shortfalls = []
    changed, created = [], []
    for key, delta in deltas.items():
        stock_line = stock.get(key)
        on_hand = stock_line.quantity if stock_line else 0
        if on_hand + delta < 0:
            shortfalls.append(
                _(
                    "Cannot issue %(quantity)s of %(item)s batch %(batch)s (expiry %(expiry)s): "
                    "only %(on_hand)s on hand in %(store)s."
                )
                % {
                    "quantity": -delta,
                    "item": names[key],
                    "batch": key[1],
                    "expiry": formats.date_format(key[2], "SHORT_DATE_FORMAT"),
                    "on_hand": on_hand,
                    "store": record.store,
                }
            )
        elif stock_line is None:
            created.append(
                StockLine(
                    store=record.store, item_id=key[0], batch=key[1], expiry=key[2], quantity=delta
                )
            )
        else:
            stock_line.quantity = on_hand + delta
            changed.append(stock_line)
    if shortfalls:
        raise ValidationError(shortfalls)
    StockLine.objects.bulk_update(changed, ["quantity"])
    StockLine.objects.bulk_create(created)
    record.status = Transaction.Status.FINALISED
    received_on_set(record, timezone.localdate())
    record.save(update_fields=["status", "received_on"])
    if record.kind == Transaction.Kind.CUSTOMER_INVOICE and record.name_id is not None:
        # A transfer to a store this site hosts arrives at once, with no sync.
        receiver = Name.objects.filter(pk=record.name_id).values_list("store_id", flat=True)
        hosted = [store_id for store_id in receiver if store_id and store_is_hosted_here(store_id)]
        inbounds_make(store_ids=hosted)
    return record


@transaction.atomic
def master_data_seed(*, stores: list[Store], items: list[Item], names: list[Name]) -> None:
    """Bulk-add master records whose codes are new; existing codes are left as they are."""
    master_data_ensure_writable()
    Store.objects.bulk_create(stores, batch_size=1000, ignore_conflicts=True)
    Item.objects.bulk_create(items, batch_size=1000, ignore_conflicts=True)
    Name.objects.bulk_create(names, batch_size=1000, ignore_conflicts=True)
    _store_names_make(stores)


def _store_names_make(stores: list[Store]) -> None:
    # Each store trades under a name of its own; the ones that have none get it now.
    unnamed = Store.objects.filter(code__in=[store.code for store in stores], trading_name=None)
    Name.objects.bulk_create(
        [store_name_for(store) for store in unnamed], batch_size=1000, ignore_conflicts=True
    )


@transaction.atomic
def master_records_bulk_save(
    *,
    model: type[MasterRecord],
    created: list[MasterRecord],
    changed: list[MasterRecord],
    fields: list[str],
    by: Actor = None,
) -> None:
    """Write many validated stores, items or names on the master in a few statements (the
    import); new stores get their trading names, and the change log records `by`."""
    master_data_ensure_writable()
    with changes_by(by):
        model.objects.bulk_create(created, batch_size=1000)
        if changed:
            model.objects.bulk_update(changed, fields, batch_size=1000)
        if model is Store:
            _store_names_make(created)  # type: ignore[arg-type]


# Units a file may name besides those items on this server already use: a typo ("tabs") in a
# national list of 20,000 items is refused rather than made a new unit. A new unit is added by
# adding one item with it in the admin.
ITEM_UNITS_STANDARD = frozenset(
    {
        "ampoule", "bag", "bottle", "box", "capsule", "cartridge", "dose", "each", "inhaler",
        "kit", "ml", "g", "pack", "pair", "patch", "pessary", "roll", "sachet", "strip",
        "suppository", "syringe", "tablet", "test", "tube", "vial",
    }
)  # fmt: skip


def item_units_known() -> frozenset[str]:
    """The units an imported item may have: the standard ones and every unit in use here."""
    in_use = Item.objects.order_by().values_list("unit", flat=True).distinct()
    return ITEM_UNITS_STANDARD | frozenset(in_use)
