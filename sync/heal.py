"""Healing a satellite restored from a backup: its store's records back, its own later work kept.

A satellite restored from yesterday's backup lacks what it sent the master since, reuses the
numbers and change-log positions of those records, and still holds old copies of records the
master has newer ones of. The master's copy of the store is the last state both sides agreed
on, so healing takes it back whole and replays on top the work the satellite has not pushed:

1. the records with unpushed local changes are set aside (transactions with all their lines,
   and deleted ids);
2. the store's transactions, lines and stock lines are replaced by the master's copy, marked as
   coming from the master so they are not pushed back;
3. the set-aside work is written again as local changes, which the next push sends; a
   transaction number the master's copy already uses is moved past the highest one; a draft the
   master holds as finalised stays finalised (its stock has moved);
4. stock is recomputed from the finalised transactions, as finalising moves it.

Everything runs in one database transaction: interrupted, nothing changed and the next run
heals again.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Case, F, IntegerField, Max, Sum, Value, When
from django.utils.translation import gettext

from stores.models import StockLine, Transaction, TransactionLine
from stores.services import STOCK_DIRECTION

from .capture import changes_from
from .changes import Cursor, changes_since
from .client import MasterClient
from .integration import changeset_apply
from .models import MASTER_SYNC_ID, ChangeAction
from .registry import LOCAL_STORE_DATA_SCOPE

TRANSACTIONS = Transaction._meta.db_table
LINES = TransactionLine._meta.db_table


@dataclass
class HealReport:
    """What healing took back from the master and what it kept of this satellite's own work."""

    taken_back: int = 0
    records_received: int = 0
    kept: int = 0
    deleted: int = 0
    renumbered: list[tuple[int, int]] = field(default_factory=list)
    kept_finalised_on_master: int = 0
    stock_clamped: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        parts = [
            "This satellite's database was restored from a backup (or rebuilt): the master had "
            "received changes from it that it no longer held. It took back its store's records "
            f"from the master ({self.taken_back} transactions it lacked) and kept the work "
            f"entered here that the master had not received ({self.kept} transactions"
            f"{f', {self.deleted} deletions' if self.deleted else ''})."
        ]
        if self.renumbered:
            moves = ", ".join(f"{old} to {new}" for old, new in self.renumbered)
            parts.append(f"Numbers the master's copy already used were moved on: {moves}.")
        if self.kept_finalised_on_master:
            parts.append(
                f"{self.kept_finalised_on_master} drafts edited here were already finalised on "
                "the master and stay finalised as the master has them."
            )
        parts.append("Stock was recomputed from the finalised transactions.")
        if self.stock_clamped:
            parts.append(
                "These batches would be below zero and were set to 0, so count them: "
                + "; ".join(self.stock_clamped)
                + "."
            )
        return " ".join(parts)


@dataclass
class _SetAside:
    """This satellite's unpushed work: whole transactions with their lines, and deleted ids."""

    transactions: list[Transaction]
    lines: list[TransactionLine]
    deleted: dict[str, set[uuid.UUID]]


def store_heal(
    *,
    client: MasterClient,
    store_id: uuid.UUID,
    since: Cursor,
    progress: Callable[[str], None],
    batch_size: int,
) -> HealReport:
    """Replace `store_id`'s data by the master's copy and replay the work after `since` on it."""
    report = HealReport()
    with transaction.atomic():
        work = _set_aside(store_id, since)
        held_before = set(
            Transaction.objects.filter(store_id=store_id).values_list("pk", flat=True)
        )
        with changes_from(MASTER_SYNC_ID):
            StockLine.objects.filter(store_id=store_id).delete()
            Transaction.objects.filter(store_id=store_id).delete()
        report.records_received = _take_back(client, progress, batch_size)
        master_copy = dict(
            Transaction.objects.filter(store_id=store_id).values_list("pk", "status")
        )
        report.taken_back = len(set(master_copy) - held_before)
        _replay(work, master_copy, report)
        _stock_recompute(store_id, report)
    return report


def _set_aside(store_id: uuid.UUID, since: Cursor) -> _SetAside:
    pending = changes_since(since, LOCAL_STORE_DATA_SCOPE).values_list(
        "table_name", "record_id", "action"
    )
    last: dict[tuple[str, uuid.UUID], str] = {}
    for table_name, record_id, action in pending:
        last[(table_name, record_id)] = action
    deleted: dict[str, set[uuid.UUID]] = {TRANSACTIONS: set(), LINES: set()}
    changed: dict[str, set[uuid.UUID]] = {TRANSACTIONS: set(), LINES: set()}
    for (table_name, record_id), action in last.items():
        if table_name in changed:
            (deleted if action == ChangeAction.DELETE else changed)[table_name].add(record_id)
    transaction_ids = changed[TRANSACTIONS] | set(
        TransactionLine.objects.filter(pk__in=changed[LINES]).values_list(
            "transaction_id", flat=True
        )
    )
    transactions = list(Transaction.objects.filter(pk__in=transaction_ids, store_id=store_id))
    lines = list(TransactionLine.objects.filter(transaction_id__in=[t.pk for t in transactions]))
    return _SetAside(transactions, lines, deleted)


def _take_back(client: MasterClient, progress: Callable[[str], None], batch_size: int) -> int:
    cursor, received = Cursor(), 0
    while True:
        changeset, cursor, remaining = client.pull(
            cursor=cursor, limit=batch_size, initial=False, store_only=True
        )
        changeset_apply(changeset=changeset, source_site=MASTER_SYNC_ID)
        received += len(changeset)
        progress(
            gettext("Restore: took back %(received)s records from the master, %(remaining)s to go.")
            % {"received": received, "remaining": remaining}
        )
        if remaining == 0:
            return received


def _replay(work: _SetAside, master_copy: dict[uuid.UUID, str], report: HealReport) -> None:
    finalised = Transaction.Status.FINALISED
    # A draft the master holds as finalised stays as the master has it: its stock has moved.
    kept = [
        record
        for record in work.transactions
        if not (master_copy.get(record.pk) == finalised and record.status != finalised)
    ]
    report.kept_finalised_on_master = len(work.transactions) - len(kept)
    report.kept = len(kept)
    if kept:
        _renumber(kept, report)
        kept_ids = {record.pk for record in kept}
        Transaction.objects.bulk_create(
            kept,
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=[f.name for f in Transaction._meta.concrete_fields if not f.primary_key],
        )
        lines = [line for line in work.lines if line.transaction_id in kept_ids]
        TransactionLine.objects.filter(transaction_id__in=kept_ids).exclude(
            pk__in=[line.pk for line in lines]
        ).delete()
        TransactionLine.objects.bulk_create(
            lines,
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=[
                f.name for f in TransactionLine._meta.concrete_fields if not f.primary_key
            ],
        )
    drafts = Transaction.objects.filter(status=Transaction.Status.DRAFT)
    report.deleted = (
        drafts.filter(pk__in=work.deleted[TRANSACTIONS]).delete()[1].get(Transaction._meta.label, 0)
    )
    TransactionLine.objects.filter(pk__in=work.deleted[LINES], transaction__in=drafts).delete()


def _renumber(kept: list[Transaction], report: HealReport) -> None:
    """Move kept transactions off numbers that other transactions of the master's copy hold."""
    store_id = kept[0].store_id
    kept_ids = {record.pk for record in kept}
    others = Transaction.objects.filter(store_id=store_id).exclude(pk__in=kept_ids)
    taken = set(others.values_list("number", flat=True))
    top = max(
        [others.aggregate(top=Max("number"))["top"] or 0] + [record.number for record in kept]
    )
    for record in sorted(kept, key=lambda r: r.number):
        if record.number in taken:
            top += 1
            report.renumbered.append((record.number, top))
            record.number = top
        taken.add(record.number)


def _stock_recompute(store_id: uuid.UUID, report: HealReport) -> None:
    """Set the store's stock to the sum of its finalised movements, as finalising moves it."""
    direction = Case(
        *(When(transaction__kind=kind, then=Value(sign)) for kind, sign in STOCK_DIRECTION.items()),
        output_field=IntegerField(),
    )
    movements = {
        (row["item_id"], row["batch"], row["expiry"]): row["total"]
        for row in TransactionLine.objects.filter(
            transaction__store_id=store_id, transaction__status=Transaction.Status.FINALISED
        )
        .order_by()
        .values("item_id", "batch", "expiry")
        .annotate(total=Sum(F("quantity") * direction))
    }
    stock = {
        (line.item_id, line.batch, line.expiry): line
        for line in StockLine.objects.filter(store_id=store_id)
    }
    changed, created = [], []
    for key in stock.keys() | movements.keys():
        quantity = movements.get(key, 0)
        if quantity < 0:
            report.stock_clamped.append(f"item {key[0]} batch {key[1]} ({quantity})")
            quantity = 0
        line = stock.get(key)
        if line is None:
            created.append(
                StockLine(
                    store_id=store_id,
                    item_id=key[0],
                    batch=key[1],
                    expiry=key[2],
                    quantity=quantity,
                )
            )
        elif line.quantity != quantity:
            line.quantity = quantity
            changed.append(line)
    StockLine.objects.bulk_update(changed, ["quantity"])
    StockLine.objects.bulk_create(created)
