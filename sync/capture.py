"""Change capture: database triggers write the change log in the same transaction as the change.

Triggers are the one choke point every writer passes (admin, services, bulk statements, cascades,
raw SQL and sync integration alike), so no caller has to remember to log. Rows that integration
writes carry the site they came from, read by the trigger from a per-transaction setting on
PostgreSQL and from a per-thread SQLite function, so they are never echoed back. The same way,
rows carry the user a service or the admin acts for (msupply.acting_user.changes_by); that stays
on this site, as the wire carries the records' rows only.
"""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from msupply.acting_user import POSTGRESQL_SETTING, acting_user_name

from .registry import SYNCED_TABLES, SyncedTable

_source_site: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "sync_source_site", default=None
)

SQLITE_SOURCE_FUNCTION = "msupply_source_site"
SQLITE_CHANGED_BY_FUNCTION = "msupply_changed_by"
CHANGE_LOG = "sync_changelog"


@contextmanager
def changes_from(site: int) -> Iterator[None]:
    """Mark every change written inside this block as coming from `site` (it must be atomic)."""
    if not connection.in_atomic_block:
        raise RuntimeError("changes_from() must run inside transaction.atomic().")
    token = _source_site.set(site)
    try:
        _set_postgresql_source(str(site))
        yield
        # Only on success: after an error the transaction is rolled back, setting and all.
        _set_postgresql_source("")
    finally:
        _source_site.reset(token)


def _set_postgresql_source(value: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('msupply.source_site', %s, true)", [value])


def register_sqlite_function(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Give each SQLite connection the functions its triggers call to read the source site and
    the acting user (msupply.acting_user)."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            SQLITE_SOURCE_FUNCTION, 0, _source_site.get, deterministic=False
        )
        connection.connection.create_function(
            SQLITE_CHANGED_BY_FUNCTION, 0, acting_user_name, deterministic=False
        )


def _store_expression(table: SyncedTable, row: str) -> str:
    """SQL for the store a row belongs to; NULL for master data."""
    if table.store_via == "store_id":
        return f"{row}.store_id"
    if table.store_via == "transaction":
        return f"(SELECT t.store_id FROM stores_transaction t WHERE t.id = {row}.transaction_id)"
    return "NULL"


CAPTURED_EVENTS = (
    ("INSERT", "NEW", "upsert"),
    ("UPDATE", "NEW", "upsert"),
    ("DELETE", "OLD", "delete"),
)


def trigger_statements(vendor: str) -> list[str]:
    """SQL that installs the change-capture triggers on every synced table."""
    statements = []
    for table in SYNCED_TABLES:
        for event, row, action in CAPTURED_EVENTS:
            name = f"sync_capture_{table.name}_{event.lower()}"
            if vendor == "postgresql":
                # Statement-level triggers log a whole bulk statement in one INSERT ... SELECT
                # from its transition table, instead of one INSERT per row.
                rows = f"{row.lower()}_rows"
                statements += [
                    f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                      INSERT INTO {CHANGE_LOG}
                        (txid, table_name, record_id, action, store_id, source_site, changed_by)
                      SELECT pg_current_xact_id()::text::bigint, '{table.name}', rec.id,
                        '{action}', {_store_expression(table, "rec")},
                        NULLIF(current_setting('msupply.source_site', true), '')::smallint,
                        COALESCE(current_setting('{POSTGRESQL_SETTING}', true), '')
                      FROM {rows} rec;
                      RETURN NULL;
                    END $$""",
                    f"DROP TRIGGER IF EXISTS {name} ON {table.name}",
                    f"""CREATE TRIGGER {name} AFTER {event} ON {table.name}
                        REFERENCING {row} TABLE AS {rows}
                        FOR EACH STATEMENT EXECUTE FUNCTION {name}()""",
                ]
            else:
                statements += [
                    f"DROP TRIGGER IF EXISTS {name}",
                    f"""CREATE TRIGGER {name} AFTER {event} ON {table.name} BEGIN
                        INSERT INTO {CHANGE_LOG}
                          (txid, table_name, record_id, action, store_id, source_site, changed_by)
                        VALUES (0, '{table.name}', {row}.id, '{action}',
                          {_store_expression(table, row)}, {SQLITE_SOURCE_FUNCTION}(),
                          {SQLITE_CHANGED_BY_FUNCTION}());
                        END""",
                ]
    return statements


def _row_trigger_removal(vendor: str) -> list[str]:
    """SQL that drops the first, row-level PostgreSQL triggers (migration 0003)."""
    if vendor != "postgresql":
        return []
    return [
        statement
        for table in SYNCED_TABLES
        for statement in (
            f"DROP TRIGGER IF EXISTS sync_capture ON {table.name}",
            f"DROP FUNCTION IF EXISTS sync_capture_{table.name}()",
        )
    ]


def backfill_statements() -> list[str]:
    """SQL that logs an upsert for every record written before the triggers existed."""
    return [
        f"""INSERT INTO {CHANGE_LOG} (txid, table_name, record_id, action, store_id)
            SELECT 0, '{table.name}', rec.id, 'upsert', {_store_expression(table, "rec")}
            FROM {table.name} rec"""
        for table in SYNCED_TABLES
    ]


def triggers_remove_sqlite(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """Before every migrate on SQLite, drop the triggers (triggers_reinstall puts them back).

    To add a CHECK constraint or alter a column SQLite rebuilds the table: it drops it and
    renames a copy, and the rename fails ("error in trigger
    sync_capture_stores_transactionline_insert: no such table: main.stores_transaction")
    while another table's trigger reads the dropped one. A data migration that writes synced
    records must therefore log its changes itself.
    """
    from django.db import connections

    target = connections[using]
    if target.vendor != "sqlite":
        return
    with transaction.atomic(using=using), target.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'sync_capture_%'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP TRIGGER IF EXISTS "{name}"')


def triggers_reinstall(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """After every migrate, put the triggers back: on SQLite, Django rebuilds a table to alter
    most columns, and the rebuilt table has lost its triggers, so its changes would silently
    stop syncing."""
    from django.db import connections

    target = connections[using]
    tables = set(target.introspection.table_names())
    if CHANGE_LOG not in tables or not {t.name for t in SYNCED_TABLES} <= tables:
        return
    with transaction.atomic(using=using), target.cursor() as cursor:
        for statement in trigger_statements(target.vendor):
            cursor.execute(statement)


@transaction.atomic
def triggers_install(vendor: str, *, backfill: bool = True) -> None:
    """Install the triggers and, at first, log the records that already exist (migrations)."""
    statements = _row_trigger_removal(vendor) + trigger_statements(vendor)
    with connection.cursor() as cursor:
        for statement in statements + (backfill_statements() if backfill else []):
            cursor.execute(statement)
