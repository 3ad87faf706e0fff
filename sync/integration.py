"""Applying received changesets: bulk upserts in foreign-key order, deletes in reverse, and a
buffer for records whose parent has not arrived yet."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import DatabaseError, connection, models, transaction

from .capture import changes_from
from .changes import ChangeSet, column_in, line_quantity_check, pk_in
from .models import BufferedRecord
from .registry import SYNCED_TABLES, TABLES_BY_MODEL, TABLES_BY_NAME, SyncedTable

UPSERT_BATCH_SIZE = 500
UNNEST_BATCH_SIZE = 5000


@dataclass
class ApplyResult:
    """Records applied, records left waiting in the buffer, and buffered records read back."""

    applied: int = 0
    buffered: int = 0
    buffer_read: int = 0


class OwnershipError(PermissionError):
    """A pushed record that the pushing site does not own."""


def _existing_ids(table: SyncedTable, ids: set[uuid.UUID]) -> set[uuid.UUID]:
    if not ids:
        return set()
    manager = table.model._default_manager
    return set(manager.filter(pk_in(table.model, ids)).order_by().values_list("pk", flat=True))


def _upsert(table: SyncedTable, rows: list[list[Any]]) -> None:
    """Insert or update decoded `rows` by primary key with bulk statements."""
    if connection.vendor == "postgresql":
        _upsert_postgresql(table, rows)
        return
    table.model._default_manager.bulk_create(
        [table.instance(row) for row in rows],
        batch_size=UPSERT_BATCH_SIZE,
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=[f.name for f in table.fields if not f.primary_key],
    )


def _upsert_postgresql(table: SyncedTable, rows: list[list[Any]]) -> None:
    # One statement per batch with one array parameter per column (unnest), sent with
    # server-side binding, instead of bulk_create's placeholder per value: about three times
    # faster for the same rows (bench/sync_bench.py).
    quote = connection.ops.quote_name
    columns = [quote(str(f.column)) for f in table.fields]
    # %b sends each array in PostgreSQL's binary format: no quoting of every element.
    arrays = ", ".join(f"%b::{f.db_type(connection)}[]" for f in table.fields)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
    # Names come from the model registry; values are parameters.
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT * FROM unnest({arrays}) ON CONFLICT ({columns[0]}) DO UPDATE SET {updates}"
    )
    connection.ensure_connection()
    # Django's cursors bind parameters client-side; this one binds them on the server.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        for start in range(0, len(rows), UNNEST_BATCH_SIZE):
            batch = rows[start : start + UNNEST_BATCH_SIZE]
            columns_values = [[row[i] for row in batch] for i in range(len(table.fields))]
            cursor.execute(sql, columns_values)


def _split_by_parents(
    changeset: ChangeSet,
) -> tuple[dict[str, list[list[Any]]], list[BufferedRecord]]:
    """Rows whose parents exist here or arrive with them, and the ones that must wait."""
    ready: dict[str, list[list[Any]]] = {}
    arriving: dict[str, set[uuid.UUID]] = {}
    waiting: list[BufferedRecord] = []
    for table in SYNCED_TABLES:
        rows = changeset.rows(table)
        missing: dict[int, tuple[SyncedTable, set[uuid.UUID]]] = {}
        for column, parent in table.foreign_keys:
            position = table.position(column)
            wanted = {row[position] for row in rows} - arriving.get(parent.name, set()) - {None}
            absent = wanted - _existing_ids(parent, wanted)
            if absent:
                missing[position] = (parent, absent)
        ready[table.name] = rows
        if missing:
            ready[table.name] = []
            for row, wire_row in zip(rows, changeset.upserts[table.name], strict=True):
                at = next((p for p, (_, ids) in missing.items() if row[p] in ids), None)
                if at is None:
                    ready[table.name].append(row)
                    continue
                waiting.append(
                    BufferedRecord(
                        table_name=table.name,
                        record_id=row[0],
                        row=wire_row,
                        source_site=0,
                        error=f"waiting for {table.field_names[at]} {row[at]} to arrive",
                        awaited_table=missing[at][0].name,
                        awaited_id=row[at],
                    )
                )
        arriving[table.name] = {row[0] for row in ready[table.name]}
    return ready, waiting


def _move_aside(table: SyncedTable, rows: list[list[Any]]) -> None:
    """Give a placeholder to local rows holding a unique key that an incoming row of another id
    claims, so codes swapped or re-used (item codes, transaction numbers) apply in any order and
    any page split. A moved row gets its own value back when its own change arrives, later in
    this changeset or in a later page, as every change after the page's read follows it.
    """
    if not rows or not table.unique_keys:
        return
    manager = table.model._default_manager
    for key in table.unique_keys:
        positions = [table.position(attname) for attname in key]
        claims = {row[0]: tuple(row[p] for p in positions) for row in rows}
        # Only a new row, or one whose key changes, can meet a key held by another row.
        for pk, *held in manager.filter(pk_in(table.model, claims)).values_list("pk", *key):
            if claims[pk] == tuple(held):
                del claims[pk]
        if not claims:
            continue
        claimed_by = {values: pk for pk, values in claims.items()}
        lookup = {
            f"{attname}__in": {values[i] for values in claimed_by} for i, attname in enumerate(key)
        }
        in_the_way = [
            pk
            for pk, *held in manager.filter(**lookup).values_list("pk", *key)
            if claimed_by.get(tuple(held), pk) != pk
        ]
        if in_the_way:
            _set_aside(table, key, in_the_way, claimed_by)


def _set_aside(
    table: SyncedTable,
    key: tuple[str, ...],
    ids: list[uuid.UUID],
    claimed: dict[tuple[Any, ...], uuid.UUID],
) -> None:
    """Move rows `ids` off `key`: a text column gets "~" and the id, a number one past both the
    highest held and the highest `claimed` in its group (a transaction number in its store)."""
    model = table.model
    fields = [table.fields[table.position(attname)] for attname in key]
    text = next((f for f in reversed(fields) if isinstance(f, models.CharField)), None)
    if text is not None:
        length = text.max_length or 32
        moved = [model(pk=pk, **{text.attname: f"~{pk.hex[: length - 1]}"}) for pk in ids]
        model._default_manager.bulk_update(moved, [text.attname])
        return
    number, group = fields[-1], [f.attname for f in fields[:-1]]
    rows = model._default_manager.filter(pk__in=ids).values_list("pk", *group)
    groups = {tuple(values) for _, *values in rows}
    top = {
        tuple(entry[g] for g in group): entry["top"] or 0
        for entry in model._default_manager.filter(
            **{f"{g}__in": {values[i] for values in groups} for i, g in enumerate(group)}
        )
        .order_by()
        .values(*group)
        .annotate(top=models.Max(number.attname))
    }
    for values in claimed:
        top[values[:-1]] = max(top.get(values[:-1], 0), values[-1])
    moved = []
    for pk, *values in rows:
        top[tuple(values)] = top.get(tuple(values), 0) + 1
        moved.append(model(pk=pk, **{number.attname: top[tuple(values)]}))
    model._default_manager.bulk_update(moved, [number.attname])


def _delete(table: SyncedTable, ids: list[uuid.UUID]) -> None:
    """Delete records by id; master data that local history still points at is deactivated.

    The master deactivates records a satellite may hold instead of deleting them; this covers a
    delete that raced a satellite's use of the record, so it never fails on a protected row.
    """
    manager = table.model._default_manager
    if table.is_master_data:
        referenced: set[uuid.UUID] = set()
        for child in SYNCED_TABLES:
            for column, parent in child.foreign_keys:
                if parent is table:
                    referenced |= set(
                        child.model._default_manager.filter(**{f"{column}__in": ids})
                        .order_by()
                        .values_list(column, flat=True)
                        .distinct()
                    )
        if referenced:
            manager.filter(pk__in=referenced).update(active=False)
            ids = [record_id for record_id in ids if record_id not in referenced]
    manager.filter(pk__in=ids).delete()


def _apply_once(
    changeset: ChangeSet, source_site: int
) -> tuple[int, dict[str, set[uuid.UUID]], list[BufferedRecord]]:
    """Apply what can be applied: (records applied, ids upserted per table, records that wait)."""
    # Deletes first, children before parents: a code or number freed by a delete is then free
    # for the record that re-uses it in the same changeset.
    applied = 0
    for table in reversed(SYNCED_TABLES):
        ids = changeset.deletes.get(table.name)
        if ids:
            _delete(table, ids)
            applied += len(ids)
    ready, waiting = _split_by_parents(changeset)
    upserted: dict[str, set[uuid.UUID]] = {}
    for table in SYNCED_TABLES:
        if ready.get(table.name):
            _move_aside(table, ready[table.name])
            _upsert(table, ready[table.name])
            applied += len(ready[table.name])
            upserted[table.name] = {row[0] for row in ready[table.name]}
    for record in waiting:
        record.source_site = source_site
    return applied, upserted, waiting


class MissingParentError(LookupError):
    """A pushed record whose parent the master does not hold."""


@transaction.atomic
def changeset_apply(*, changeset: ChangeSet, source_site: int, buffer: bool = True) -> ApplyResult:
    """Apply a received changeset atomically, marked as coming from `source_site`.

    With `buffer` (pulls), records whose parent is missing wait in the buffer, each naming the
    parent it awaits; a record is retried only when a changeset (or a retry) brings that parent,
    so it never blocks the rest and an unrelated page never reads the buffer. Without it
    (pushes, which a satellite sends in change order), a missing parent raises
    MissingParentError naming the record, and nothing is applied.
    """
    with changes_from(source_site):
        applied, upserted, waiting = _apply_once(changeset, source_site)
        if not buffer:
            if waiting:
                first = waiting[0]
                raise MissingParentError(
                    f"{first.table_name} {first.record_id} points at a record the master does "
                    f"not hold ({first.error})"
                )
            return ApplyResult(applied=applied)
        _buffer_forget(changeset)
        _buffer_store(waiting)
        retried, read = _buffer_retry(upserted)
    return ApplyResult(
        applied=applied + retried, buffered=BufferedRecord.objects.count(), buffer_read=read
    )


def _id_chunks(ids: set[uuid.UUID]) -> Iterator[list[uuid.UUID]]:
    """`ids` in lists that fit one statement's parameters beside one more (SQLite allows 999)."""
    ordered = sorted(ids)
    size = (connection.features.max_query_params or len(ordered) + 1) - 1
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def _buffered(
    name_field: str, id_field: str, ids: dict[str, set[uuid.UUID]]
) -> Iterator[models.QuerySet[BufferedRecord]]:
    """Querysets of the buffered records whose (`name_field`, `id_field`) is in `ids`.

    Both pairs of fields are indexed (buffered_record_once, buffer_awaited): each query reads
    only the records it names.
    """
    for name, table_ids in ids.items():
        for chunk in _id_chunks(table_ids):
            yield BufferedRecord.objects.filter(
                column_in(BufferedRecord, id_field, chunk), **{name_field: name}
            )


def _buffer_forget(changeset: ChangeSet) -> None:
    """Drop buffered copies of records that a newer changeset has just carried."""
    if not BufferedRecord.objects.exists():
        return
    carried = {
        table.name: {row[0] for row in changeset.rows(table)}
        | set(changeset.deletes.get(table.name, []))
        for table in SYNCED_TABLES
    }
    for records in _buffered("table_name", "record_id", {n: i for n, i in carried.items() if i}):
        records.delete()


def _buffer_store(waiting: list[BufferedRecord]) -> None:
    BufferedRecord.objects.bulk_create(
        waiting,
        update_conflicts=True,
        unique_fields=["table_name", "record_id"],
        update_fields=["row", "error", "source_site", "awaited_table", "awaited_id"],
    )


def _buffer_retry(arrived: dict[str, set[uuid.UUID]]) -> tuple[int, int]:
    """Apply the buffered records awaiting a parent in `arrived` (ids per table), then those
    that these release in turn; returns (records applied, buffered records read)."""
    applied_total = read = 0
    # Records buffered before they named their parent (sync 0010) are retried once, by the
    # first changeset after the upgrade; those that still wait then name it. From then on this
    # is one index look-up that finds nothing.
    buffered = list(BufferedRecord.objects.filter(awaited_table=""))
    while True:
        for records in _buffered("awaited_table", "awaited_id", arrived):
            buffered += records
        if not buffered:
            return applied_total, read
        read += len(buffered)
        changeset = ChangeSet()
        for record in buffered:
            changeset.upserts.setdefault(record.table_name, []).append(record.row)
        applied, arrived, waiting = _apply_once(changeset, 0)
        applied_total += applied
        _buffer_settle(buffered, waiting)
        buffered = []


def _buffer_settle(retried: list[BufferedRecord], waiting: list[BufferedRecord]) -> None:
    """Delete the `retried` records that applied; the others now await what `waiting` says."""
    still = {(record.table_name, record.record_id): record for record in waiting}
    done: dict[str, set[uuid.UUID]] = {}
    again = []
    for record in retried:
        now = still.get((record.table_name, record.record_id))
        if now is None:
            done.setdefault(record.table_name, set()).add(record.record_id)
            continue
        record.error, record.awaited_table, record.awaited_id = (
            now.error,
            now.awaited_table,
            now.awaited_id,
        )
        again.append(record)
    BufferedRecord.objects.bulk_update(again, ["error", "awaited_table", "awaited_id"])
    for records in _buffered("table_name", "record_id", done):
        records.delete()


def changeset_check_ownership(*, changeset: ChangeSet, store_id: uuid.UUID) -> None:
    """Refuse a push that carries anything but store data of `store_id`, naming the record."""
    for name in list(changeset.upserts) + list(changeset.deletes):
        table = TABLES_BY_NAME[name]
        if table.is_master_data:
            first = (changeset.upserts.get(name) or [[None]])[0][0] or changeset.deletes[name][0]
            raise OwnershipError(
                f"{name} {first} is master data: items, names and stores can only be changed "
                "on the master, so a satellite may not push them."
            )
    # Rows as sent must name the pushing store (directly or through their transaction) ...
    transactions = TABLES_BY_NAME["stores_transaction"]
    store_of_transaction = {
        row[0]: row[transactions.position("store_id")] for row in changeset.rows(transactions)
    }
    for table in SYNCED_TABLES:
        if table.is_master_data:
            continue
        for row in changeset.rows(table):
            if table.store_via == "store_id":
                owner = row[table.position("store_id")]
            else:
                owner = store_of_transaction.get(row[table.position("transaction_id")], store_id)
            if owner != store_id:
                raise _foreign(table, row[0], owner)
    # ... and rows already here that they would overwrite or delete must belong to it too.
    _check_existing(changeset, store_id, set(store_of_transaction))


def changeset_check_line_quantities(*, changeset: ChangeSet) -> None:
    """Refuse line quantities that their transaction held here forbids (one query for all).

    Lines that travel with their transaction were checked as the changeset was decoded.
    """
    from stores.models import Transaction

    lines = changeset.lines_of_other_transactions()
    if not lines:
        return
    kinds = dict(
        Transaction.objects.filter(pk_in(Transaction, lines)).order_by().values_list("pk", "kind")
    )
    for transaction_id, quantities in lines.items():
        for line_id, quantity in quantities:
            line_quantity_check(line_id=line_id, quantity=quantity, kind=kinds.get(transaction_id))


def _check_existing(
    changeset: ChangeSet, store_id: uuid.UUID, arriving_transactions: set[uuid.UUID]
) -> None:
    from stores.models import StockLine, Transaction, TransactionLine

    def ids(name: str) -> set[uuid.UUID]:
        table = TABLES_BY_NAME[name]
        return {row[0] for row in changeset.rows(table)} | set(changeset.deletes.get(name, []))

    lines = TABLES_BY_NAME["stores_transactionline"]
    lines_parents = {
        row[lines.position("transaction_id")] for row in changeset.rows(lines)
    } - arriving_transactions
    checks = [
        (Transaction.objects.filter(pk_in(Transaction, ids("stores_transaction"))), "store_id"),
        (StockLine.objects.filter(pk_in(StockLine, ids("stores_stockline"))), "store_id"),
        (
            TransactionLine.objects.filter(pk_in(TransactionLine, ids(lines.name))),
            "transaction__store_id",
        ),
        (Transaction.objects.filter(pk_in(Transaction, lines_parents)), "store_id"),
    ]
    for queryset, store_path in checks:
        foreign = queryset.exclude(**{store_path: store_id}).values_list("pk", store_path).first()
        if foreign is not None:
            raise _foreign(TABLES_BY_MODEL[queryset.model], foreign[0], foreign[1])


def _foreign(table: SyncedTable, record_id: object, other_store: object) -> OwnershipError:
    return OwnershipError(
        f"{table.name} {record_id} belongs to store {other_store}, not to the store this "
        "satellite hosts: a satellite may push only its own store's data."
    )


@dataclass
class SetAside:
    """A pushed record the master could not integrate, or one waiting for such a record."""

    table_name: str
    record_id: uuid.UUID
    row: list[Any]
    reason: str
    awaited_table: str = ""
    awaited_id: uuid.UUID | None = None


@dataclass
class IsolatedResult:
    applied: int = 0
    # Records applied, by table: a retry of what waits for them follows.
    upserted: dict[str, set[uuid.UUID]] = field(default_factory=dict)
    rejected: list[SetAside] = field(default_factory=list)
    waiting: list[SetAside] = field(default_factory=list)


def changeset_apply_isolated(
    *, changeset: ChangeSet, source_site: int, held: dict[str, set[uuid.UUID]]
) -> IsolatedResult:
    """Apply a pushed changeset, setting aside each record the master's data refuses.

    The whole changeset is tried at once first (the usual case: one statement per table). If
    the database refuses it, each table's rows are applied in halves, each half in a savepoint,
    down to the refused records, which are returned as rejected with the database's reason.
    Records whose parent is rejected here, or already `held` (ids per table), wait with it. A
    missing parent that is neither raises MissingParentError, and a refused delete raises the
    database error: the caller refuses the whole batch for those.
    """
    with changes_from(source_site):
        try:
            with transaction.atomic():
                applied, upserted, waiting = _apply_once(changeset, source_site)
                if waiting:
                    raise _Unsorted
            return IsolatedResult(applied=applied, upserted=upserted)
        except (DatabaseError, _Unsorted):
            pass
        result = IsolatedResult()
        for table in reversed(SYNCED_TABLES):
            ids = changeset.deletes.get(table.name)
            if ids:
                _delete(table, ids)
                result.applied += len(ids)
        blocked = {name: set(ids) for name, ids in held.items()}
        for table in SYNCED_TABLES:
            rows = changeset.rows(table)
            if not rows:
                continue
            ready, wires = _ready_rows(table, rows, changeset.upserts[table.name], blocked, result)
            applied_ids = _bisect(table, ready, wires, result)
            result.upserted[table.name] = applied_ids
            blocked.setdefault(table.name, set()).update({row[0] for row in rows} - applied_ids)
    return result


class _Unsorted(Exception):
    """Some record of the changeset waits: sort the changeset record by record."""


def _ready_rows(
    table: SyncedTable,
    rows: list[list[Any]],
    wires: list[list[Any]],
    blocked: dict[str, set[uuid.UUID]],
    result: IsolatedResult,
) -> tuple[list[list[Any]], list[list[Any]]]:
    """The rows whose parents are here; the others wait for a blocked parent (or raise)."""
    ready, ready_wires = [], []
    missing: dict[int, tuple[SyncedTable, set[uuid.UUID]]] = {}
    for column, parent in table.foreign_keys:
        position = table.position(column)
        wanted = {row[position] for row in rows} - {None}
        absent = wanted - _existing_ids(parent, wanted)
        if absent:
            missing[position] = (parent, absent)
    for row, wire in zip(rows, wires, strict=True):
        at = next((p for p, (_, ids) in missing.items() if row[p] in ids), None)
        if at is None:
            ready.append(row)
            ready_wires.append(wire)
            continue
        parent = missing[at][0]
        if row[at] not in blocked.get(parent.name, set()):
            raise MissingParentError(
                f"{table.name} {row[0]} points at a record the master does not hold "
                f"({table.field_names[at]} {row[at]})"
            )
        result.waiting.append(
            SetAside(
                table_name=table.name,
                record_id=row[0],
                row=wire,
                reason=f"waits for {parent.name} {row[at]}, which the master set aside",
                awaited_table=parent.name,
                awaited_id=row[at],
            )
        )
    return ready, ready_wires


def _bisect(
    table: SyncedTable, rows: list[list[Any]], wires: list[list[Any]], result: IsolatedResult
) -> set[uuid.UUID]:
    """Apply `rows` in savepoints, halving what the database refuses; returns the applied ids."""
    if not rows:
        return set()
    try:
        with transaction.atomic():
            _move_aside(table, rows)
            _upsert(table, rows)
    except DatabaseError as error:
        if len(rows) == 1:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            result.rejected.append(SetAside(table.name, rows[0][0], wires[0], reason))
            return set()
        half = len(rows) // 2
        return _bisect(table, rows[:half], wires[:half], result) | _bisect(
            table, rows[half:], wires[half:], result
        )
    result.applied += len(rows)
    return {row[0] for row in rows}
