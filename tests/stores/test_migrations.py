"""Migrating an existing site keeps every synced table's change capture working."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from sync.models import ChangeLog
from tests.factories import StoreFactory


@pytest.mark.django_db(transaction=True)
def test_adding_store_active_to_an_existing_site_keeps_store_changes_syncing() -> None:
    """On SQLite, Django would rebuild stores_store to add the column, dropping its triggers."""
    executor = MigrationExecutor(connection)
    executor.migrate([("stores", "0003_report_indexes")])
    executor = MigrationExecutor(connection)
    executor.migrate([("stores", "0004_number_counter_store_active")])
    store = StoreFactory()
    assert list(ChangeLog.objects.filter(record_id=store.pk).values_list("action", flat=True)) == [
        "upsert"
    ]
