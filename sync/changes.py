"""Reading the change log and turning changes into the compact changesets sent on the wire."""

import datetime
import decimal
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from django.core.exceptions import ValidationError
from django.core.validators import DecimalValidator
from django.db import connection, models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils.dateparse import parse_date

from stores.models import Transaction, TransactionLine

from .models import ChangeAction, ChangeLog
from .registry import SYNCED_TABLES, TABLES_BY_NAME, SyncedTable

CURSOR_LIMIT = 2**63


class Cursor(NamedTuple):
    """A position in the change log: (transaction id, sequence number), written "txid.seq"."""

    txid: int = 0
    seq: int = 0

    def __str__(self) -> str:
        return f"{self.txid}.{self.seq}"

    @classmethod
    def parse(cls, text: str) -> "Cursor":
        """Read a cursor; raises ValueError with a readable message when it is not one."""
        try:
            txid, seq = (int(part) for part in text.split("."))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a sync cursor (expected two numbers: 12.345)."
            ) from None
        if txid < 0 or seq < 0:
            raise ValueError(f"{text!r} is not a sync cursor (numbers must not be negative).")
        if txid >= CURSOR_LIMIT or seq >= CURSOR_LIMIT:
            # The change log holds both as bigint: a larger number cannot be a position in it.
            raise ValueError(f"{text!r} is not a sync cursor (numbers must be below 2**63).")
        return cls(txid, seq)

    @classmethod
    def of(cls, change: ChangeLog) -> "Cursor":
        return cls(change.txid, change.seq)


# The lowest transaction id that may still commit changes to this database: the oldest
# transaction this statement's snapshot sees running, leaving out those known to run in other
# databases of the cluster (they never write here) and counting our own, if it has written.
POSTGRESQL_HORIZON = """LEAST(
    COALESCE(
        (SELECT MIN(x::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) x
         WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                           WHERE a.backend_xid = xid(x) AND a.datname <> current_database())),
        pg_snapshot_xmax(pg_current_snapshot())::text::bigint),
    COALESCE(pg_current_xact_id_if_assigned()::text::bigint,
             pg_snapshot_xmax(pg_current_snapshot())::text::bigint))"""


def changes_since(cursor: Cursor, scope: Q) -> QuerySet[ChangeLog]:
    """Changes after `cursor` within `scope`, in cursor order, that can no longer be overtaken.

    On PostgreSQL a change is returned only once every transaction that could still commit one
    with a lower cursor has ended (its txid is below POSTGRESQL_HORIZON): a reader never skips
    a change that commits later, at the price of waiting for long transactions to end.
    """
    # A row comparison, so both databases walk the (txid, seq) index from the cursor on.
    after = RawSQL("(txid, seq) > (%s, %s)", (cursor.txid, cursor.seq), BooleanField())
    changes = ChangeLog.objects.filter(after, scope)
    if connection.vendor == "postgresql":
        changes = changes.filter(txid__lt=RawSQL(POSTGRESQL_HORIZON, []))  # noqa: S611 - constant
    return changes.order_by("txid", "seq")


def changes_last() -> Cursor:
    """The highest position in this site's change log (0.0 when it is empty)."""
    last = ChangeLog.objects.order_by("-txid", "-seq").values_list("txid", "seq").first()
    return Cursor(*last) if last else Cursor()


def changes_digest(changes: Iterable[tuple[int, int, str, uuid.UUID, str]]) -> str:
    """A fingerprint of change-log entries (txid, seq, table, record id, action).

    Two logs with the same entries at the same positions have the same digest: a satellite that
    still holds the batch the master last applied recognises it, a restored one does not.
    """
    digest = hashlib.sha256()
    for txid, seq, table_name, record_id, action in changes:
        digest.update(f"{txid}.{seq}:{table_name}:{record_id.hex}:{action};".encode())
    return digest.hexdigest()[:32]


def range_digest(start: Cursor, end: Cursor, scope: Q) -> str:
    """The digest of this site's changes in (start, end] within `scope`."""
    until = RawSQL("(txid, seq) <= (%s, %s)", (end.txid, end.seq), BooleanField())
    changes = changes_since(start, scope).filter(until)
    return changes_digest(changes.values_list("txid", "seq", "table_name", "record_id", "action"))


@dataclass
class ChangePage:
    """One page of changes as a changeset, where the next page starts, and how much is left."""

    changeset: "ChangeSet"
    start: Cursor
    end: Cursor
    remaining: int
    # changes_digest of the page's change-log entries.
    digest: str = ""


def changes_page(cursor: Cursor, scope: Q, limit: int) -> ChangePage:
    """Read up to `limit` changes after `cursor` and build the changeset that carries them."""
    rows = list(
        changes_since(cursor, scope).values_list(
            "txid", "seq", "table_name", "record_id", "action"
        )[:limit]
    )
    end = Cursor(rows[-1][0], rows[-1][1]) if rows else cursor
    # A short page is the last one; only a full page needs counting what follows.
    remaining = changes_since(end, scope).count() if len(rows) == limit else 0
    changeset = changeset_build(
        (table, record_id, action) for _, _, table, record_id, action in rows
    )
    return ChangePage(changeset, cursor, end, remaining, changes_digest(rows))


def pk_in(model: type[models.Model], ids: Iterable[uuid.UUID | str]) -> Q | RawSQL:
    """A filter on primary keys that stays one short parameter on PostgreSQL however many ids."""
    return column_in(model, "id", ids)


def column_in(model: type[models.Model], column: str, ids: Iterable[uuid.UUID | str]) -> Q | RawSQL:
    """A filter on the UUID `column` that stays one short parameter on PostgreSQL; `ids` are
    UUIDs or, as checked wire values are, 32 hex digits."""
    ids = list(ids)
    if connection.vendor == "postgresql":
        # One comma-separated string: Django binds parameters client-side, and quoting an array
        # of thousands of UUIDs element by element costs more than the query itself.
        condition = f'"{model._meta.db_table}"."{column}" = ANY(string_to_array(%s, \',\')::uuid[])'
        text = ",".join(i if isinstance(i, str) else i.hex for i in ids)
        return RawSQL(condition, (text,), BooleanField())  # noqa: S611
    return Q(**{f"{column}__in": ids})


class WireError(ValueError):
    """A changeset on the wire that does not describe synced records correctly."""


def _encoder_kind(model_field: models.Field) -> str:
    if isinstance(model_field, models.UUIDField) or (
        isinstance(model_field, models.ForeignKey)
        and isinstance(model_field.target_field, models.UUIDField)
    ):
        return "uuid"
    if isinstance(model_field, (models.DateField, models.DecimalField)):
        return "text"
    return "json"


def _encoder(model_field: models.Field) -> Callable[[Any], Any]:
    kind = _encoder_kind(model_field)
    if kind == "uuid":
        return lambda value: None if value is None else value.hex
    if kind == "text":
        return lambda value: None if value is None else str(value)
    return lambda value: value


def _uuid_from_hex(value: Any) -> uuid.UUID:
    # The wire's UUIDs are 32 hex digits; this skips uuid.UUID's parsing of other spellings.
    if isinstance(value, str) and len(value) == 32:
        return uuid.UUID(bytes=bytes.fromhex(value))
    return uuid.UUID(str(value))


class _Refused(ValueError):
    """A wire value the model's rules refuse; its message says why, after the field's name."""


def _shown(value: Any) -> str:
    # A refused value is quoted in the message, never a megabyte of it.
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _integer_range(model_field: models.Field) -> tuple[int, int]:
    """The values both this database and every other site's can hold in `model_field`.

    A master on SQLite stores 64-bit integers, but the satellites it serves may run PostgreSQL,
    whose integer columns are 32-bit: the narrower range is the one every site can apply.
    """
    internal_type = model_field.get_internal_type()
    low, high = BaseDatabaseOperations.integer_field_ranges.get(
        internal_type, (-(2**31), 2**31 - 1)
    )
    here_low, here_high = connection.ops.integer_field_range(internal_type)
    if here_low is not None:
        low = max(low, here_low)
    if here_high is not None:
        high = min(high, here_high)
    return low, high


def _integer_decoder(model_field: models.Field) -> Callable[[Any], Any]:
    low, high = _integer_range(model_field)

    def decode(value: Any) -> int:
        # Django's to_python would read true as 1 and cut 1.9 to 1: a wire number is exact.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Refused(f"{_shown(value)} is not a whole number")
        if not low <= value <= high:
            raise _Refused(f"{value} is outside {low}..{high}")
        return value

    return decode


def _boolean_decoder(model_field: models.Field) -> Callable[[Any], Any]:
    def decode(value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Refused(f"{_shown(value)} is not true or false")
        return value

    return decode


def _text_decoder(model_field: models.Field) -> Callable[[Any], Any]:
    max_length = model_field.max_length

    def decode(value: Any) -> str:
        if not isinstance(value, str):
            raise _Refused(f"{_shown(value)} is not text")
        # Refused, never cut: a shortened code or batch is another record's, or nobody's.
        if max_length is not None and len(value) > max_length:
            raise _Refused(f"has {len(value)} characters, more than {max_length}")
        # PostgreSQL cannot store NUL in text; SQLite would, and pass it on to satellites.
        if "\x00" in value:
            raise _Refused(f"{_shown(value)} holds a NUL character")
        return value

    return decode


def _decimal_decoder(model_field: models.DecimalField) -> Callable[[Any], Any]:
    validator = DecimalValidator(model_field.max_digits, model_field.decimal_places)

    def decode(value: Any) -> Any:
        if not isinstance(value, str):
            raise _Refused(f"{_shown(value)} is not a decimal number written as text")
        try:
            number = decimal.Decimal(value)
        except decimal.InvalidOperation:
            raise _Refused(f"{_shown(value)} is not a decimal number") from None
        if not number.is_finite():
            raise _Refused(f"{_shown(value)} is not a finite number")
        try:
            validator(number)
        except ValidationError:
            raise _Refused(
                f"{_shown(value)} has more than {model_field.max_digits} digits or "
                f"{model_field.decimal_places} decimal places"
            ) from None
        return number

    return decode


def _date_decoder(model_field: models.Field) -> Callable[[Any], Any]:
    def decode(value: Any) -> datetime.date:
        date = parse_date(value) if isinstance(value, str) else None
        if date is None:
            raise _Refused(f"{_shown(value)} is not a date written YYYY-MM-DD")
        return date

    return decode


def _with_rules(model_field: models.Field, decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`decode`, then the field's choices and nullability, as the model declares them."""
    choices = [str(choice) for choice, _ in model_field.flatchoices]

    def decode_checked(value: Any) -> Any:
        if value is None:
            if not model_field.null:
                raise _Refused("is missing (null)")
            return None
        decoded = decode(value)
        if choices and decoded not in choices:
            raise _Refused(f"{_shown(value)} is not one of {', '.join(choices)}")
        return decoded

    return decode_checked


def _decoder(model_field: models.Field) -> Callable[[Any], Any]:
    if _encoder_kind(model_field) == "uuid":
        return _uuid_from_hex
    if isinstance(model_field, models.BooleanField):
        return _boolean_decoder(model_field)
    if isinstance(model_field, models.IntegerField):
        return _integer_decoder(model_field)
    if isinstance(model_field, models.DecimalField):
        return _decimal_decoder(model_field)
    # A DateTimeField is a DateField too, but its values are no dates.
    if isinstance(model_field, models.DateField) and not isinstance(
        model_field, models.DateTimeField
    ):
        return _date_decoder(model_field)
    if isinstance(model_field, (models.CharField, models.TextField)):
        return _text_decoder(model_field)
    return model_field.to_python


def _all_of(values: list[Any], kinds: set[type]) -> bool:
    return set(map(type, values)) <= kinds


def _uuids_canonical(values: list[Any]) -> bool:
    """Whether `values` are all UUIDs as the wire writes them: 32 lowercase hex digits."""
    if not values:
        return True
    if not _all_of(values, {str}) or set(map(len, values)) != {32}:
        return False
    joined = "".join(values)
    try:
        # fromhex skips spaces; the round trip refuses them, and upper case.
        return bytes.fromhex(joined).hex() == joined
    except ValueError:
        return False


def _bulk_checker(model_field: models.Field) -> Callable[[list[Any]], bool]:
    """A check of a whole column of wire values at once, with no value turned into a Python
    object: True only if every value passes the model's rules and is written the way this
    site's encoder writes it (so SQL can cast it as it is). False says nothing: the column is
    then decoded value by value, which names the first bad value or writes the good ones
    canonically."""
    low: int | float
    high: int | float
    if model_field.flatchoices and not isinstance(model_field, models.CharField):
        return lambda values: False
    choices = {str(choice) for choice, _ in model_field.flatchoices}
    if _encoder_kind(model_field) == "uuid":
        return _uuids_canonical
    if isinstance(model_field, models.BooleanField):
        return lambda values: _all_of(values, {bool})
    if isinstance(model_field, models.IntegerField):
        low, high = _integer_range(model_field)
        return lambda values: (
            _all_of(values, {int}) and (not values or low <= min(values) and max(values) <= high)
        )
    if isinstance(model_field, models.DecimalField):
        places = model_field.decimal_places or 0
        whole = (model_field.max_digits or 0) - places
        # Fewer digits than the validator allows (no leading zeros counted off): a value this
        # pattern takes, DecimalValidator takes too.
        number = rf"-?\d{{1,{whole}}}" + (rf"(?:\.\d{{1,{places}}})?" if places else "")
        pattern = re.compile(rf"{number}(?:,{number})*")
        return lambda values: (
            not values
            or (_all_of(values, {str}) and pattern.fullmatch(",".join(values)) is not None)
        )
    if isinstance(model_field, models.DateField) and not isinstance(
        model_field, models.DateTimeField
    ):
        return _dates_canonical
    if isinstance(model_field, (models.CharField, models.TextField)):
        max_length = model_field.max_length
        return lambda values: (
            _all_of(values, {str})
            and (not values or max_length is None or max(map(len, values)) <= max_length)
            and "\x00" not in "".join(values)
            and (not choices or set(values) <= choices)
        )
    return lambda values: False


def _dates_canonical(values: list[Any]) -> bool:
    # A column holds few distinct dates (expiry dates, invoice dates): each is parsed once.
    if not _all_of(values, {str}):
        return False
    for value in set(values):
        try:
            date = parse_date(value)
        except ValueError:
            return False
        if date is None or date.isoformat() != value:
            return False
    return True


@functools.cache
def _bulk_checkers(table: SyncedTable) -> list[tuple[bool, Callable[[list[Any]], bool]]]:
    """Per column: whether it may be null, and its bulk check (_bulk_checker)."""
    return [(model_field.null, _bulk_checker(model_field)) for model_field in table.fields]


def _column_canonical(nullable: bool, check: Callable[[list[Any]], bool], column: tuple) -> bool:
    values = list(column)
    if None in values:
        if not nullable:
            return False
        values = [value for value in values if value is not None]
    return check(values)


@functools.cache
def _encoders(table: SyncedTable) -> list[Callable[[Any], Any]]:
    return [_encoder(model_field) for model_field in table.fields]


@functools.cache
def _decoders(table: SyncedTable) -> list[Callable[[Any], Any]]:
    """Per column, the function that checks a wire value against the model's rules and turns
    it into a Python value; it raises _Refused saying what is wrong."""
    return [_with_rules(model_field, _decoder(model_field)) for model_field in table.fields]


INVOICE_KINDS = {Transaction.Kind.SUPPLIER_INVOICE, Transaction.Kind.CUSTOMER_INVOICE}


def line_quantity_check(*, line_id: Any, quantity: int, kind: str | None) -> None:
    """Refuse a transaction line quantity the services would refuse (stores.services).

    No line moves nothing; on an invoice goods only go one way, so its quantities are positive
    (an inventory adjustment reduces stock). `kind` None: the transaction is not known here.
    """
    name = "stores_transactionline"
    if quantity == 0:
        raise WireError(f"{name} {line_id}: quantity 0 is refused: a line must move stock.")
    if kind in INVOICE_KINDS and quantity < 0:
        raise WireError(
            f"{name} {line_id}: quantity {quantity} is refused: lines of a {kind} must be positive."
        )


@dataclass
class ChangeSet:
    """Upserted rows and deleted ids per table; rows hold every column, primary key first."""

    upserts: dict[str, list[list[Any]]] = field(default_factory=dict)
    deletes: dict[str, list[uuid.UUID]] = field(default_factory=dict)
    _decoded: dict[str, list[Any]] = field(default_factory=dict, repr=False, compare=False)
    # Tables whose rows check() has passed.
    _checked: set[str] = field(default_factory=set, repr=False, compare=False)

    def __len__(self) -> int:
        return sum(map(len, self.upserts.values())) + sum(map(len, self.deletes.values()))

    def to_wire(self) -> dict[str, Any]:
        return {
            "upserts": [
                {"table": name, "fields": TABLES_BY_NAME[name].field_names, "rows": rows}
                for name, rows in self.upserts.items()
                if rows
            ],
            "deletes": [
                {"table": name, "ids": [record_id.hex for record_id in ids]}
                for name, ids in self.deletes.items()
                if ids
            ],
        }

    @classmethod
    def from_wire(cls, data: Any) -> "ChangeSet":
        """Check and read a changeset; raises WireError naming what is wrong."""
        if not isinstance(data, dict):
            raise WireError("changes must be an object with 'upserts' and 'deletes'.")
        changeset = cls()
        for entry in _entries(data, "upserts"):
            table = _table(entry)
            if entry.get("fields") != table.field_names:
                raise WireError(
                    f"{table.name}: fields must be {table.field_names}, got {entry.get('fields')}."
                )
            rows = entry.get("rows")
            if not isinstance(rows, list) or not all(
                isinstance(row, list) and len(row) == len(table.field_names) for row in rows
            ):
                raise WireError(f"{table.name}: rows must be lists of {len(table.fields)} values.")
            changeset.upserts.setdefault(table.name, []).extend(rows)
        for entry in _entries(data, "deletes"):
            table = _table(entry)
            ids = entry.get("ids")
            if not isinstance(ids, list):
                raise WireError(f"{table.name}: ids must be a list.")
            changeset.deletes.setdefault(table.name, []).extend(_uuid(table, i) for i in ids)
        return changeset

    def decode(self) -> "ChangeSet":
        """Check every row against the model's rules now; raises WireError naming the first bad
        value. Python values are made only when rows() asks for them."""
        for table in SYNCED_TABLES:
            self.check(table)
        return self

    def check(self, table: SyncedTable) -> None:
        """Check the rows of `table` once, leaving every value written canonically.

        A column is checked at once where its values are written as this site's encoder writes
        them, turning none into a Python object (uuid.UUID alone took 16% of a push's time on
        the master). A table with any other value is decoded row by row, which names the first
        bad value as it always has, and its rows are written again canonically, so SQL can cast
        every value as it is.
        """
        rows = self.upserts.get(table.name)
        if not rows or table.name in self._checked:
            return
        columns = zip(*rows, strict=True)
        checkers = _bulk_checkers(table)
        if all(
            _column_canonical(nullable, check, column)
            for (nullable, check), column in zip(checkers, columns, strict=True)
        ):
            if table.model is TransactionLine:
                self._lines_check_wire(table)
        else:
            encoders = _encoders(table)
            rows[:] = [
                [encode(value) for encode, value in zip(encoders, row, strict=True)]
                for row in self.rows(table)
            ]
        self._checked.add(table.name)

    def ids(self, table: SyncedTable) -> set[uuid.UUID]:
        """The ids of the upserted rows of `table`."""
        self.check(table)
        return record_ids(self.upserts.get(table.name, []))

    def rows(self, table: SyncedTable) -> list[list[Any]]:
        """The upserted rows of `table` with their values as Python types (decoded once)."""
        if table.name not in self._decoded:
            rows = [decode_row(table, row) for row in self.upserts.get(table.name, [])]
            if table.model is TransactionLine:
                self._lines_check(table, rows)
            self._decoded[table.name] = rows
        return self._decoded[table.name]

    def _lines_check(self, lines: SyncedTable, rows: list[list[Any]]) -> None:
        """Check line quantities against their transaction's kind when it travels with them."""
        transactions = TABLES_BY_NAME[Transaction._meta.db_table]
        kind_at = transactions.position("kind")
        kinds = {row[0]: row[kind_at] for row in self.rows(transactions)}
        transaction_at, quantity_at = lines.position("transaction_id"), lines.position("quantity")
        for row in rows:
            line_quantity_check(
                line_id=row[0], quantity=row[quantity_at], kind=kinds.get(row[transaction_at])
            )

    def _lines_check_wire(self, lines: SyncedTable) -> None:
        """_lines_check on canonical wire rows: only a quantity below 1 can be refused."""
        transactions = TABLES_BY_NAME[Transaction._meta.db_table]
        self.check(transactions)
        kind_at = transactions.position("kind")
        kinds = {row[0]: row[kind_at] for row in self.upserts.get(transactions.name, [])}
        transaction_at, quantity_at = lines.position("transaction_id"), lines.position("quantity")
        for row in self.upserts[lines.name]:
            if row[quantity_at] < 1:
                line_quantity_check(
                    line_id=uuid.UUID(row[0]),
                    quantity=row[quantity_at],
                    kind=kinds.get(row[transaction_at]),
                )

    def lines_of_other_transactions(self) -> dict[str, list[tuple[str, int]]]:
        """(line id, quantity) per transaction id, for lines whose transaction is not in here;
        ids as the wire writes them."""
        self.decode()
        lines = TABLES_BY_NAME[TransactionLine._meta.db_table]
        transactions = TABLES_BY_NAME[Transaction._meta.db_table]
        arriving = {row[0] for row in self.upserts.get(transactions.name, [])}
        transaction_at, quantity_at = lines.position("transaction_id"), lines.position("quantity")
        others: dict[str, list[tuple[str, int]]] = {}
        for row in self.upserts.get(lines.name, []):
            if row[transaction_at] not in arriving:
                others.setdefault(row[transaction_at], []).append((row[0], row[quantity_at]))
        return others

    def digest(self) -> str:
        """A fingerprint of the changes as sent: a re-sent batch has the same one."""
        canonical = json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


def record_ids(rows: Iterable[list[Any]]) -> set[uuid.UUID]:
    """The ids of checked wire `rows`."""
    return {_uuid_from_hex(row[0]) for row in rows}


def decode_row(table: SyncedTable, row: list[Any]) -> list[Any]:
    """A wire row of `table` as Python values; raises WireError naming its first bad value."""
    if row[0] is None:
        raise WireError(f"{table.name}: a row has no id.")
    values = []
    for model_field, decode, value in zip(table.fields, _decoders(table), row, strict=True):
        try:
            values.append(decode(value))
        except (ValidationError, TypeError, ValueError) as error:
            reason = error if isinstance(error, _Refused) else f"has a bad value {_shown(value)}"
            raise WireError(
                f"{table.name} {str(row[0])[:40]}: {model_field.attname} {reason}."
            ) from error
    return values


def _entries(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise WireError(f"'{key}' must be a list of objects.")
    return entries


def _table(entry: dict[str, Any]) -> SyncedTable:
    name = entry.get("table")
    if name not in TABLES_BY_NAME:
        raise WireError(f"{name!r} is not a synced table.")
    return TABLES_BY_NAME[str(name)]


def _uuid(table: SyncedTable, value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as error:
        raise WireError(f"{table.name}: {value!r} is not a record id.") from error


def rows_encode(table: SyncedTable, rows: Iterable[Iterable[Any]]) -> list[list[Any]]:
    """Rows of `table` read with values_list(*table.field_names), as the wire carries them."""
    encoders = _encoders(table)
    return [[encode(value) for encode, value in zip(encoders, row, strict=True)] for row in rows]


def changeset_build(changes: Iterable[tuple[str, uuid.UUID, str]]) -> ChangeSet:
    """The current state of every (table, record id, action) change: one row or tombstone each.

    A record changed many times travels once; one deleted since is left out, as its tombstone
    follows at a later cursor; one deleted and held again travels as it is now.
    """
    last_action: dict[str, dict[uuid.UUID, str]] = {}
    for table_name, record_id, action in changes:
        last_action.setdefault(table_name, {})[record_id] = action
    changeset = ChangeSet()
    for table in SYNCED_TABLES:
        actions = last_action.get(table.name, {})
        upserted = [rid for rid, action in actions.items() if action == ChangeAction.UPSERT]
        deleted = [rid for rid, action in actions.items() if action == ChangeAction.DELETE]
        if deleted:
            # A record this site holds again (healing took back the master's copy of a record
            # deleted here) travels as it is now, never as a tombstone.
            back = set(
                table.model._default_manager.filter(pk_in(table.model, deleted))
                .order_by()
                .values_list("pk", flat=True)
            )
            upserted += [rid for rid in deleted if rid in back]
            deleted = [rid for rid in deleted if rid not in back]
        if upserted:
            changeset.upserts[table.name] = rows_encode(
                table,
                table.model._default_manager.filter(pk_in(table.model, upserted))
                .order_by()
                .values_list(*table.field_names),
            )
        if deleted:
            changeset.deletes[table.name] = deleted
    return changeset
