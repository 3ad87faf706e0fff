"""Applying received changesets: bulk upserts in foreign-key order, deletes in reverse, and a
buffer for records whose parent has not arrived yet."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import DatabaseError, connection, models, transaction

from .capture import changes_from
from .changes import ChangeSet, column_in, decode_row, line_quantity_check, pk_in, record_ids
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


def _absent_parents(
    table: SyncedTable, wires: list[list[Any]]
) -> dict[int, tuple[SyncedTable, set[str]]]:
    """Per foreign-key position of `table`: its parent table and the ids that checked wire
    rows `wires` point at and this database does not hold (none, usually)."""
    wanted = {
        position: (parent, {row[position] for row in wires} - {None})
        for position, parent in ((table.position(c), p) for c, p in table.foreign_keys)
    }
    wanted = {position: entry for position, entry in wanted.items() if entry[1]}
    if not wanted:
        return {}
    if connection.vendor == "postgresql":
        # Only the absent ids come back: no existing id is sent back and parsed.
        parts = [
            f"SELECT {position}, v FROM unnest(string_to_array(%s, ',')) v "  # noqa: S608
            f"WHERE NOT EXISTS (SELECT 1 FROM {connection.ops.quote_name(parent.name)} p "
            "WHERE p.id = v::uuid)"
            for position, (parent, _) in wanted.items()
        ]
        absent: dict[int, set[str]] = {}
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), [",".join(ids) for _, ids in wanted.values()])
            for position, record_id in cursor.fetchall():
                absent.setdefault(position, set()).add(record_id)
    else:
        absent = {}
        for position, (parent, ids) in wanted.items():
            held = parent.model._default_manager.filter(pk_in(parent.model, ids)).order_by()
            missing = ids - {pk.hex for pk in held.values_list("pk", flat=True)}
            if missing:
                absent[position] = missing
    return {position: (wanted[position][0], ids) for position, ids in absent.items()}


def _write(table: SyncedTable, wires: list[list[Any]]) -> None:
    """Upsert checked wire rows `wires` of `table`, moving aside local rows in their way."""
    if connection.vendor == "postgresql":
        # The usual page has nothing in the way: one statement says so, and only a page that
        # has pays for Python values.
        if _in_the_way_postgresql(table, wires):
            _move_aside(table, [decode_row(table, wire) for wire in wires])
        _upsert_postgresql(table, wires)
        return
    rows = [decode_row(table, wire) for wire in wires]
    _move_aside(table, rows)
    table.model._default_manager.bulk_create(
        [table.instance(row) for row in rows],
        batch_size=UPSERT_BATCH_SIZE,
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=[f.name for f in table.fields if not f.primary_key],
    )


def _arrays(table: SyncedTable, columns: list[str]) -> str:
    """unnest's arguments for `columns` of `table`, cast in SQL from the wire's values to each
    column's type; _array_values gives their parameters."""
    return ", ".join(_array_sql(table.fields[table.position(column)]) for column in columns)


def _array_sql(model_field: models.Field) -> str:
    db_type = model_field.db_type(connection)
    if isinstance(model_field, (models.CharField, models.TextField)):
        # %b sends the array in PostgreSQL's binary format: no quoting of every element.
        return f"%b::{db_type}[]"
    # A column of UUIDs, numbers, dates or booleans travels as one comma-separated text that
    # SQL splits ('' for null): psycopg builds an array parameter element by element in Python,
    # which took a third of the time left on this side of a push. A one-row column holding
    # null splits into no element; unnest pads it back to null beside the other columns.
    return f"string_to_array(%s, ',', '')::{db_type}[]"


def _array_values(table: SyncedTable, columns: list[str], wires: list[list[Any]]) -> list[Any]:
    """The parameters of _arrays(table, columns) for checked wire rows `wires`."""
    values: list[Any] = []
    for column in columns:
        model_field = table.fields[table.position(column)]
        at = table.position(column)
        if isinstance(model_field, (models.CharField, models.TextField)):
            values.append([wire[at] for wire in wires])
        elif isinstance(model_field, models.BooleanField):
            values.append(",".join(_BOOLEAN_TEXT[wire[at]] for wire in wires))
        elif isinstance(model_field, models.IntegerField):
            values.append(",".join("" if wire[at] is None else str(wire[at]) for wire in wires))
        else:
            values.append(",".join("" if wire[at] is None else wire[at] for wire in wires))
    return values


_BOOLEAN_TEXT = {True: "t", False: "f", None: ""}


def _server_cursor() -> psycopg.Cursor[Any]:
    # Django's cursors bind parameters client-side; this one binds them on the server.
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def _in_the_way_postgresql(table: SyncedTable, wires: list[list[Any]]) -> bool:
    """Whether a row here of another id holds a unique key (a code, a number) that `wires`
    claim: the case _move_aside handles."""
    if not table.unique_keys:
        return False
    quote = connection.ops.quote_name
    checks, values = [], []
    for key in table.unique_keys:
        columns = ["id", *key]
        matches = " AND ".join(f"t.{quote(c)} = w.{quote(c)}" for c in key)
        joined = f"{quote(table.name)} t JOIN unnest({_arrays(table, columns)}) AS w"
        names = ", ".join(quote(c) for c in columns)
        # Names come from the model registry; values are parameters.
        checks.append(f"EXISTS (SELECT 1 FROM {joined}({names}) ON {matches} WHERE t.id <> w.id)")  # noqa: S608
        values += _array_values(table, columns, wires)
    with connection.wrap_database_errors, _server_cursor() as cursor:
        # Names come from the model registry; values are parameters.
        cursor.execute(f"SELECT {' OR '.join(checks)}", values)  # noqa: S608
        found = cursor.fetchone()
    return bool(found and found[0])


def _upsert_postgresql(table: SyncedTable, wires: list[list[Any]]) -> None:
    # One statement per batch with one array parameter per column (unnest), sent with
    # server-side binding, instead of bulk_create's placeholder per value: about three times
    # faster for the same rows (bench/sync_bench.py). The wire's values go as they are and
    # PostgreSQL casts them: no value is turned into a Python object on the way.
    quote = connection.ops.quote_name
    columns = [quote(str(f.column)) for f in table.fields]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
    # Names come from the model registry; values are parameters.
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT * FROM unnest({_arrays(table, table.field_names)}) "
        f"ON CONFLICT ({columns[0]}) DO UPDATE SET {updates}"
    )
    with connection.wrap_database_errors, _server_cursor() as cursor:
        for start in range(0, len(wires), UNNEST_BATCH_SIZE):
            batch = wires[start : start + UNNEST_BATCH_SIZE]
            cursor.execute(sql, _array_values(table, table.field_names, batch))


def _split_waiting(
    table: SyncedTable,
    wires: list[list[Any]],
    missing: dict[int, tuple[SyncedTable, set[str]]],
) -> tuple[list[list[Any]], list[BufferedRecord]]:
    """The rows of `wires` whose parents are here, and the others, waiting for them."""
    ready: list[list[Any]] = []
    waiting: list[BufferedRecord] = []
    for wire in wires:
        at = next((p for p, (_, ids) in missing.items() if wire[p] in ids), None)
        if at is None:
            ready.append(wire)
            continue
        awaited = uuid.UUID(wire[at])
        waiting.append(
            BufferedRecord(
                table_name=table.name,
                record_id=uuid.UUID(wire[0]),
                row=wire,
                source_site=0,
                error=f"waiting for {table.field_names[at]} {awaited} to arrive",
                awaited_table=missing[at][0].name,
                awaited_id=awaited,
            )
        )
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
) -> tuple[int, dict[str, list[list[Any]]], list[BufferedRecord]]:
    """Apply what can be applied: (records applied, wire rows upserted per table, records that
    wait)."""
    changeset.decode()
    # Deletes first, children before parents: a code or number freed by a delete is then free
    # for the record that re-uses it in the same changeset.
    applied = 0
    for table in reversed(SYNCED_TABLES):
        ids = changeset.deletes.get(table.name)
        if ids:
            _delete(table, ids)
            applied += len(ids)
    # Parents before children: a table's parents are checked once the parents that travel with
    # it are written, so the database answers for both.
    upserted: dict[str, list[list[Any]]] = {}
    waiting: list[BufferedRecord] = []
    for table in SYNCED_TABLES:
        wires = changeset.upserts.get(table.name)
        if not wires:
            continue
        missing = _absent_parents(table, wires)
        if missing:
            wires, waits = _split_waiting(table, wires, missing)
            waiting += waits
        if wires:
            _write(table, wires)
            applied += len(wires)
            upserted[table.name] = wires
    for record in waiting:
        record.source_site = source_site
    return applied, upserted, waiting


def _ids(upserted: dict[str, list[list[Any]]]) -> dict[str, set[uuid.UUID]]:
    return {name: record_ids(wires) for name, wires in upserted.items()}


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
        retried, read = _buffer_retry(_ids(upserted))
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
        table.name: changeset.ids(table) | set(changeset.deletes.get(table.name, []))
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
    if not BufferedRecord.objects.exists():
        return applied_total, read
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
        applied, upserted, waiting = _apply_once(changeset, 0)
        arrived = _ids(upserted)
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
    changeset.decode()
    for name in list(changeset.upserts) + list(changeset.deletes):
        table = TABLES_BY_NAME[name]
        if table.is_master_data:
            first = (changeset.upserts.get(name) or [[None]])[0][0] or changeset.deletes[name][0]
            # Written as a UUID, as the other refusals write ids, however the wire spelt it.
            first = uuid.UUID(str(first))
            raise OwnershipError(
                f"{name} {first} is master data: items, names and stores can only be changed "
                "on the master, so a satellite may not push them."
            )
    # Checked wire rows spell ids as 32 hex digits: they are compared as they are.
    own = store_id.hex
    # Rows as sent must name the pushing store (directly or through their transaction) ...
    transactions = TABLES_BY_NAME["stores_transaction"]
    store_at = transactions.position("store_id")
    store_of_transaction = {
        row[0]: row[store_at] for row in changeset.upserts.get(transactions.name, [])
    }
    for table in SYNCED_TABLES:
        wires = changeset.upserts.get(table.name)
        if table.is_master_data or not wires:
            continue
        if table.store_via == "store_id":
            at = table.position("store_id")
            owners = [wire[at] for wire in wires]
        else:
            at = table.position("transaction_id")
            owners = [store_of_transaction.get(wire[at], own) for wire in wires]
        if set(owners) == {own}:
            continue
        index = next(i for i, owner in enumerate(owners) if owner != own)
        raise _foreign(table, uuid.UUID(wires[index][0]), uuid.UUID(owners[index]))
    # ... and rows already here that they would overwrite or delete must belong to it too.
    _check_existing(changeset, store_id, set(store_of_transaction))


def changeset_check_line_quantities(*, changeset: ChangeSet) -> None:
    """Refuse line quantities that their transaction held here forbids (one query for all).

    Lines that travel with their transaction were checked as the changeset was decoded.
    """
    from stores.models import Transaction

    # Only a quantity below 1 can be refused.
    lines = {
        transaction_id: low
        for transaction_id, quantities in changeset.lines_of_other_transactions().items()
        if (low := [(line_id, quantity) for line_id, quantity in quantities if quantity < 1])
    }
    if not lines:
        return
    kinds = {
        pk.hex: kind
        for pk, kind in Transaction.objects.filter(pk_in(Transaction, lines))
        .order_by()
        .values_list("pk", "kind")
    }
    for transaction_id, quantities in lines.items():
        for line_id, quantity in quantities:
            line_quantity_check(
                line_id=uuid.UUID(line_id), quantity=quantity, kind=kinds.get(transaction_id)
            )


def _check_existing(
    changeset: ChangeSet, store_id: uuid.UUID, arriving_transactions: set[str]
) -> None:
    from stores.models import StockLine, Transaction, TransactionLine

    def ids(name: str) -> set[str]:
        return {row[0] for row in changeset.upserts.get(name, [])} | {
            record_id.hex for record_id in changeset.deletes.get(name, [])
        }

    lines = TABLES_BY_NAME["stores_transactionline"]
    transaction_at = lines.position("transaction_id")
    lines_parents = {
        row[transaction_at] for row in changeset.upserts.get(lines.name, [])
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
    # Records applied, by table, when some were held: a retry of what waits for them follows.
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
            # Only held records can be released by what applied: with none, no ids are made.
            return IsolatedResult(applied=applied, upserted=_ids(upserted) if held else {})
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
            wires = changeset.upserts.get(table.name)
            if not wires:
                continue
            ready = _ready_rows(table, wires, blocked, result)
            applied_ids = _bisect(table, ready, result)
            result.upserted[table.name] = applied_ids
            blocked.setdefault(table.name, set()).update(record_ids(wires) - applied_ids)
    return result


class _Unsorted(Exception):
    """Some record of the changeset waits: sort the changeset record by record."""


def _ready_rows(
    table: SyncedTable,
    wires: list[list[Any]],
    blocked: dict[str, set[uuid.UUID]],
    result: IsolatedResult,
) -> list[list[Any]]:
    """The rows whose parents are here; the others wait for a blocked parent (or raise)."""
    missing = _absent_parents(table, wires)
    ready = []
    for wire in wires:
        at = next((p for p, (_, ids) in missing.items() if wire[p] in ids), None)
        if at is None:
            ready.append(wire)
            continue
        parent, awaited = missing[at][0], uuid.UUID(wire[at])
        if awaited not in blocked.get(parent.name, set()):
            raise MissingParentError(
                f"{table.name} {uuid.UUID(wire[0])} points at a record the master does not hold "
                f"({table.field_names[at]} {awaited})"
            )
        result.waiting.append(
            SetAside(
                table_name=table.name,
                record_id=uuid.UUID(wire[0]),
                row=wire,
                reason=f"waits for {parent.name} {awaited}, which the master set aside",
                awaited_table=parent.name,
                awaited_id=awaited,
            )
        )
    return ready


def _bisect(table: SyncedTable, wires: list[list[Any]], result: IsolatedResult) -> set[uuid.UUID]:
    """Apply `wires` in savepoints, halving what the database refuses; returns the applied ids."""
    if not wires:
        return set()
    try:
        with transaction.atomic():
            _write(table, wires)
    except DatabaseError as error:
        if len(wires) == 1:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            result.rejected.append(SetAside(table.name, uuid.UUID(wires[0][0]), wires[0], reason))
            return set()
        half = len(wires) // 2
        return _bisect(table, wires[:half], result) | _bisect(table, wires[half:], result)
    result.applied += len(wires)
    return record_ids(wires)
