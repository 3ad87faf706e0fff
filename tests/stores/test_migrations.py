"""Migrating an existing site keeps every synced table's change capture working."""

from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from factory.django import DjangoModelFactory

from sync.models import ChangeLog
from tests.factories import NameFactory, StoreFactory, TransactionFactory


@pytest.fixture
def migrated_back() -> Iterator[None]:
    """Leave the test database fully migrated again, however the test ends."""
    yield
    call_command("migrate", verbosity=0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("migrated_back")
def test_adding_store_active_to_an_existing_site_keeps_store_changes_syncing() -> None:
    """On SQLite, Django would rebuild stores_store to add the column, dropping its triggers."""
    call_command("migrate", "stores", "0003_report_indexes", verbosity=0)
    # Without the migrate command's signals: nothing puts triggers back behind this migration.
    executor = MigrationExecutor(connection)
    executor.migrate([("stores", "0004_number_counter_store_active")])
    store = StoreFactory()
    assert list(ChangeLog.objects.filter(record_id=store.pk).values_list("action", flat=True)) == [
        "upsert"
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("migrated_back")
def test_adding_kind_and_status_checks_to_an_existing_site_keeps_transactions_syncing() -> None:
    """On SQLite, Django rebuilds stores_transaction to add a CHECK: the line triggers that read
    it must be off meanwhile, and the rebuilt table's own triggers put back after."""
    call_command("migrate", "stores", "0004_number_counter_store_active", verbosity=0)
    call_command("migrate", "stores", "0005_kind_status_constraints", verbosity=0)
    # And on to today's tables (0006 rebuilds names and transactions again, for transfers).
    call_command("migrate", "stores", verbosity=0)
    invoice = TransactionFactory()
    logged = ChangeLog.objects.filter(record_id__in=[invoice.pk, invoice.name_id])
    assert sorted(logged.values_list("table_name", flat=True)) == [
        "stores_name",
        "stores_transaction",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("factory", "values"),
    [
        (TransactionFactory, {"kind": "x"}),
        (TransactionFactory, {"status": "bogus"}),
        (NameFactory, {"kind": "x"}),
    ],
)
def test_database_refuses_a_kind_or_status_outside_its_choices(
    factory: type[DjangoModelFactory], values: dict[str, str]
) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        factory(**values)
