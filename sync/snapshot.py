"""Initialisation from a snapshot of the current rows, not a replay of the change log.

A satellite with no pull cursor receives every current row of master data and of its store
(with the other stores' transfers that concern it), table by table in registry order (parents
first), each table in primary-key pages (`pk > after`), as ordinary changesets. Its cost follows
the rows held, however often they changed.

The seam with the log: the snapshot starts at a change-log position S taken *before* its first
page is read, and the satellite's log pulls continue after S. Every change at or below S is
committed when S is taken, so the pages (read later) show it or something newer; every change
above S comes again through the log, as the record's current row or its tombstone, and an
upsert of a row already held changes nothing. On PostgreSQL S is just below the read horizon
(changes.POSTGRESQL_HORIZON): every transaction with a lower id has ended. On SQLite, with one
writer at a time, S is the top of the log.

The master keeps nothing per page: the satellite sends S and where it stopped (table, last
primary key) with every request, and keeps both itself so a dropped link resumes the snapshot.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from stores.models import Transaction
from stores.transfers import transfers_routed_to

from .changes import CURSOR_LIMIT, POSTGRESQL_HORIZON, ChangeSet, Cursor, changes_last, rows_encode
from .models import PeerState, SyncPeer
from .prune import pull_expiry_check
from .registry import SYNCED_TABLES, TABLES_BY_MODEL, TABLES_BY_NAME, SyncedTable


@dataclass(frozen=True)
class SnapshotPosition:
    """Where a snapshot goes on: the table, and the last primary key read in it (None: none)."""

    table: str
    after: uuid.UUID | None = None


@dataclass
class SnapshotPage:
    """One page of a snapshot: its rows, where the next page starts (None: done), the snapshot's
    log position, and (on the first page only) the rows in scope when it started."""

    changeset: ChangeSet
    start: Cursor
    next: SnapshotPosition | None
    total: int | None = None


FIRST = SnapshotPosition(SYNCED_TABLES[0].name)


def snapshot_scope(table: SyncedTable, store_id: uuid.UUID) -> Q:
    """The rows of `table` that the site hosting `store_id` holds: all master data, its store's
    data, and the other stores' transactions routed to it (stores.transfers) with their lines."""
    if table.is_master_data:
        return Q()
    if table.model is Transaction:
        return Q(store_id=store_id) | transfers_routed_to(store_id)
    if table.store_via == "transaction":
        held = Transaction.objects.filter(snapshot_scope(TABLES_BY_MODEL[Transaction], store_id))
        return Q(transaction__in=held.values("pk"))
    return Q(store_id=store_id)


def _rows(table: SyncedTable, store_id: uuid.UUID) -> QuerySet[Any]:
    return table.model._default_manager.filter(snapshot_scope(table, store_id))


def snapshot_start_position() -> Cursor:
    """The change-log position a snapshot read from now on starts at (see the module's doc)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {POSTGRESQL_HORIZON}")  # noqa: S608 - a constant
            horizon = int(cursor.fetchone()[0])
        return Cursor(horizon - 1, CURSOR_LIMIT - 1)
    return changes_last()


def snapshot_read(
    *, store_id: uuid.UUID, position: SnapshotPosition, limit: int
) -> tuple[ChangeSet, SnapshotPosition | None]:
    """Up to `limit` rows in scope from `position` on, in registry and primary-key order."""
    changeset = ChangeSet()
    names = [table.name for table in SYNCED_TABLES]
    at: SnapshotPosition | None = position
    while at is not None and limit > 0:
        table = TABLES_BY_NAME[at.table]
        rows = _rows(table, store_id)
        if at.after is not None:
            rows = rows.filter(pk__gt=at.after)
        read = list(rows.order_by("pk").values_list(*table.field_names)[:limit])
        if read:
            changeset.upserts[table.name] = rows_encode(table, read)
        limit -= len(read)
        if limit == 0:
            at = SnapshotPosition(table.name, read[-1][0])
        else:
            following = names.index(table.name) + 1
            at = SnapshotPosition(names[following]) if following < len(names) else None
    return changeset, at


def snapshot_page(
    *,
    peer: SyncPeer,
    store_id: uuid.UUID,
    start: Cursor | None,
    position: SnapshotPosition,
    limit: int,
) -> SnapshotPage:
    """On the master: serve one snapshot page to `peer`; `start` None begins a snapshot.

    A resumed snapshot is refused (reinitialise_required) once pruning passed its position while
    the satellite was silent: the deletes it would read from the log after it are gone.
    """
    states = PeerState.objects.filter(peer=peer)
    total = None
    if start is None:
        pull_expiry_check(peer=peer, cursor=Cursor(), initial=True)
        with transaction.atomic():
            start = snapshot_start_position()
            total = sum(_rows(table, store_id).count() for table in SYNCED_TABLES)
    else:
        pull_expiry_check(peer=peer, cursor=start, initial=True)
    # Before the page is read, as for a pull: master data in it may be held from now on, so it
    # is deactivated rather than deleted (selectors.master_record_may_be_held). The satellite's
    # log pulls go on from `start`, so pruning may compact up to there (sync.prune).
    served = changes_last()
    states.update(
        served_txid=served.txid, served_seq=served.seq, pull_txid=start.txid, pull_seq=start.seq
    )
    changeset, following = snapshot_read(store_id=store_id, position=position, limit=limit)
    if following is None:
        states.update(last_success_at=timezone.now())
    return SnapshotPage(changeset, start, following, total)


def snapshot_progress(*, done: int, total: int, done_here: int, seconds: float) -> str:
    """Say how far an initialisation is: records done and in all, rate, and time left."""
    rate = done_here / seconds if seconds > 0 else 0.0
    left = max(total - done, 0) / rate if rate else None
    values = {"done": done, "total": total, "rate": f"{rate:.0f}"}
    if left is None:
        return gettext("Initialising: %(done)s of %(total)s records, %(rate)s records/s.") % values
    if left < 90:
        return gettext(
            "Initialising: %(done)s of %(total)s records, %(rate)s records/s, "
            "about %(left)s s left."
        ) % {**values, "left": f"{left:.0f}"}
    return gettext(
        "Initialising: %(done)s of %(total)s records, %(rate)s records/s, about %(left)s min left."
    ) % {**values, "left": f"{left / 60:.0f}"}
