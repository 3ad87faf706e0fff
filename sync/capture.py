"""Change capture: database triggers write the change log in the same transaction as the change.

Triggers are the one choke point every writer passes (admin, services, bulk statements, cascades,
raw SQL and sync integration alike), so no caller has to remember to log. Rows that integration
writes carry the site they came from, read by the trigger from a per-transaction setting on
PostgreSQL and from a per-thread SQLite function, so they are never echoed back.
"""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from .registry import SYNCED_TABLES, SyncedTable

_source_site: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "sync_source_site", default=None
)

SQLITE_SOURCE_FUNCTION = "msupply_source_site"
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
    """Give each SQLite connection the function its triggers call to read the source site."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            SQLITE_SOURCE_FUNCTION, 0, _source_site.get, deterministic=False
        )


def _store_expression(table: SyncedTable, row: str) -> str:
    """SQL for the store a row belongs to; NULL for master data."""
    if table.store_via == "store_id":
        return f"{row}.store_id"
    if table.store_via == "transaction":
        return f"(SELECT t.store_id FROM stores_transaction t WHERE t.id = {row}.transaction_id)"
    return "NULL"


def trigger_statements(vendor: str) -> list[str]:
    """SQL that installs the change-capture triggers on every synced table."""
    statements = []
    if vendor == "postgresql":
        for table in SYNCED_TABLES:
            function = f"sync_capture_{table.name}"
            statements += [
                f"""
                CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE rec RECORD; change_action varchar;
                BEGIN
                  IF TG_OP = 'DELETE' THEN rec := OLD; change_action := 'delete';
                  ELSE rec := NEW; change_action := 'upsert'; END IF;
                  INSERT INTO {CHANGE_LOG}
                    (txid, table_name, record_id, action, store_id, source_site)
                  VALUES (
                    pg_current_xact_id()::text::bigint, TG_TABLE_NAME, rec.id, change_action,
                    {_store_expression(table, "rec")},
                    NULLIF(current_setting('msupply.source_site', true), '')::smallint);
                  RETURN NULL;
                END $$""",
                f"DROP TRIGGER IF EXISTS sync_capture ON {table.name}",
                f"""CREATE TRIGGER sync_capture AFTER INSERT OR UPDATE OR DELETE ON {table.name}
                    FOR EACH ROW EXECUTE FUNCTION {function}()""",
            ]
        return statements
    for table in SYNCED_TABLES:
        for event, row, action in (
            ("INSERT", "NEW", "upsert"),
            ("UPDATE", "NEW", "upsert"),
            ("DELETE", "OLD", "delete"),
        ):
            trigger = f"sync_capture_{table.name}_{event.lower()}"
            statements += [
                f"DROP TRIGGER IF EXISTS {trigger}",
                f"""CREATE TRIGGER {trigger} AFTER {event} ON {table.name} BEGIN
                    INSERT INTO {CHANGE_LOG}
                      (txid, table_name, record_id, action, store_id, source_site)
                    VALUES (0, '{table.name}', {row}.id, '{action}',
                      {_store_expression(table, row)}, {SQLITE_SOURCE_FUNCTION}());
                    END""",
            ]
    return statements


def backfill_statements() -> list[str]:
    """SQL that logs an upsert for every record written before the triggers existed."""
    return [
        f"""INSERT INTO {CHANGE_LOG} (txid, table_name, record_id, action, store_id)
            SELECT 0, '{table.name}', rec.id, 'upsert', {_store_expression(table, "rec")}
            FROM {table.name} rec"""
        for table in SYNCED_TABLES
    ]


@transaction.atomic
def triggers_install(vendor: str) -> None:
    """Install the triggers and log the records that already exist (used by the migration)."""
    with connection.cursor() as cursor:
        for statement in trigger_statements(vendor) + backfill_statements():
            cursor.execute(statement)
