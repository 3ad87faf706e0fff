"""Which tables sync carries, in foreign-key order, and how each finds its store."""

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.db import models
from django.db.models import Q

from stores.models import Item, Name, StockLine, Store, Transaction, TransactionLine


@dataclass(frozen=True)
class SyncedTable:
    """A synced model and the way its change-log rows learn the store they belong to."""

    model: type[models.Model]
    # "none": master data; "store_id": the row's own column; "transaction": via its transaction.
    store_via: str

    @property
    def name(self) -> str:
        return self.model._meta.db_table

    @property
    def is_master_data(self) -> bool:
        return self.store_via == "none"

    @cached_property
    def fields(self) -> list[models.Field]:
        """Concrete fields, primary key first, in a stable order."""
        return [field for field in self.model._meta.concrete_fields]

    @cached_property
    def field_names(self) -> list[str]:
        return [field.attname for field in self.fields]

    def instance(self, row: list[Any]) -> models.Model:
        """An unsaved model instance holding a decoded row."""
        return self.model(**dict(zip(self.field_names, row, strict=True)))

    def position(self, attname: str) -> int:
        """Where the column `attname` sits in a row."""
        return self.field_names.index(attname)

    @cached_property
    def unique_keys(self) -> list[tuple[str, ...]]:
        """Column sets besides the primary key that no two rows may share (codes, numbers)."""
        keys: list[tuple[str, ...]] = [
            (field.attname,) for field in self.fields if field.unique and not field.primary_key
        ]
        keys += [
            tuple(self._attname(name) for name in constraint.fields)
            for constraint in self.model._meta.constraints
            if isinstance(constraint, models.UniqueConstraint) and constraint.fields
        ]
        return keys

    def _attname(self, name: str) -> str:
        return next(field.attname for field in self.fields if name in (field.name, field.attname))

    @cached_property
    def foreign_keys(self) -> list[tuple[str, "SyncedTable"]]:
        """(column, parent table) for every foreign key to another synced table."""
        return [
            (field.attname, TABLES_BY_MODEL[field.related_model])
            for field in self.fields
            if field.is_relation and field.related_model in TABLES_BY_MODEL
        ]


# Parents before children: upserts run in this order, deletes in reverse.
SYNCED_TABLES = [
    SyncedTable(Store, "none"),
    SyncedTable(Item, "none"),
    SyncedTable(Name, "none"),
    SyncedTable(Transaction, "store_id"),
    SyncedTable(TransactionLine, "transaction"),
    SyncedTable(StockLine, "store_id"),
]
TABLES_BY_MODEL: dict[type[models.Model], SyncedTable] = {t.model: t for t in SYNCED_TABLES}
TABLES_BY_NAME = {table.name: table for table in SYNCED_TABLES}
MASTER_TABLE_NAMES = [table.name for table in SYNCED_TABLES if table.is_master_data]
STORE_TABLE_NAMES = [table.name for table in SYNCED_TABLES if not table.is_master_data]

# Change-log scopes, each with a partial index (ChangeLog.Meta) so a page is an index range scan.
MASTER_DATA_SCOPE = Q(table_name__in=MASTER_TABLE_NAMES)
# What a satellite pushes: store data written here, never what it received.
LOCAL_STORE_DATA_SCOPE = Q(table_name__in=STORE_TABLE_NAMES, source_site__isnull=True)
