"""Rejected records: what the master's data refuses is set aside, the rest of its batch applied."""

# The protocol tests' fixtures are imported, and tests name them as parameters.
# ruff: noqa: F811

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from rest_framework.test import APIClient

from stores.models import StockLine, Store, Transaction, TransactionLine
from sync.models import HeldStatus, PeerState, RejectedRecord, SyncPeer
from sync.rejects import rejected_discard, rejected_retry_all
from tests.factories import (
    ItemFactory,
    StockLineFactory,
    TransactionFactory,
    TransactionLineFactory,
    UserFactory,
    changeset_of,
)
from tests.sync.test_protocol import (  # noqa: F401 (fixtures)
    api,
    handshake,
    key,
    own_invoice,
    push,
    store,
)

pytestmark = pytest.mark.django_db

# A rule only the master's data breaks: number 13 is held by its own records (say, from a
# satellite restored from a backup), so a satellite's transaction numbered 13 cannot go in.
REFUSED_NUMBER = 13
SQLITE_REFUSAL = (
    "CREATE TRIGGER refuse_13_{event} BEFORE {event} ON stores_transaction "
    f"WHEN NEW.number = {REFUSED_NUMBER} "
    "BEGIN SELECT RAISE(ABORT, 'number 13 is taken on the master'); END"
)
POSTGRESQL_REFUSAL = [
    "CREATE FUNCTION refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"IF NEW.number = {REFUSED_NUMBER} THEN "
    "RAISE EXCEPTION 'number 13 is taken on the master'; END IF; RETURN NEW; END $$",
    "CREATE TRIGGER refuse_13 BEFORE INSERT OR UPDATE ON stores_transaction "
    "FOR EACH ROW EXECUTE FUNCTION refuse_13()",
]


def refuse_number_13() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for event in ("INSERT", "UPDATE"):
                cursor.execute(SQLITE_REFUSAL.format(event=event))
        else:
            for statement in POSTGRESQL_REFUSAL:
                cursor.execute(statement)


def allow_number_13() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for event in ("INSERT", "UPDATE"):
                cursor.execute(f"DROP TRIGGER refuse_13_{event}")
        else:
            cursor.execute("DROP TRIGGER refuse_13 ON stores_transaction")


def held() -> dict[str, str]:
    return {str(r.record_id): r.status for r in RejectedRecord.objects.filter(sync_id=2)}


def stages() -> dict[str, int]:
    state = PeerState.objects.get(peer__sync_id=2)
    return {
        "acknowledged": state.records_received,
        "integrated": state.records_integrated,
        "waiting": RejectedRecord.objects.filter(status=HeldStatus.WAITING).count(),
        "rejected": RejectedRecord.objects.filter(status=HeldStatus.REJECTED).count(),
    }


@pytest.fixture
def refused(api: APIClient, store: Store) -> tuple[Transaction, TransactionLine]:
    """Satellite 2 pushed two invoices with a line each; the master refused the one numbered
    13. Returns that invoice and its line."""
    refuse_number_13()
    bad, bad_line = own_invoice(store)
    bad.number = REFUSED_NUMBER
    good, good_line = own_invoice(store)
    # Not whatever the factories' shared counter gives: that can be 13 too, by test order.
    good.number = REFUSED_NUMBER - 1
    response = push(api, changeset_of(bad, good, bad_line, good_line))
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["applied"], body["waiting"]) == (2, 1)
    assert [entry["id"] for entry in body["rejected"]] == [str(bad.pk)]
    assert "number 13 is taken on the master" in body["rejected"][0]["reason"]
    assert body["stages"] | {"set_aside": None} == {
        "to_push": 0,
        "acknowledged": 4,
        "integrated": 2,
        "waiting": 1,
        "rejected": 1,
        "set_aside": None,
    }
    assert Transaction.objects.filter(pk=good.pk).exists()
    assert TransactionLine.objects.filter(pk=good_line.pk).exists()
    return bad, bad_line


def test_a_refused_record_is_set_aside_with_its_dependents_and_the_rest_applied(
    refused: tuple[Transaction, TransactionLine],
) -> None:
    bad, bad_line = refused
    assert held() == {str(bad.pk): HeldStatus.REJECTED, str(bad_line.pk): HeldStatus.WAITING}
    line = RejectedRecord.objects.get(record_id=bad_line.pk)
    assert (line.awaited_table, line.awaited_id) == ("stores_transaction", bad.pk)
    assert RejectedRecord.objects.get(record_id=bad.pk).fields["number"] == REFUSED_NUMBER
    assert not Transaction.objects.filter(pk=bad.pk).exists()


def test_a_later_record_of_a_rejected_transaction_waits_with_it(
    api: APIClient, refused: tuple[Transaction, TransactionLine]
) -> None:
    bad, _ = refused
    late = TransactionLineFactory.build(transaction=bad, item=ItemFactory())
    response = push(api, changeset_of(late), batch_id="batch-2")
    assert response.status_code == 200, response.json()
    assert (response.json()["applied"], response.json()["waiting"]) == (0, 1)
    assert held()[str(late.pk)] == HeldStatus.WAITING


def test_rejected_records_go_in_at_the_next_contact_once_the_conflict_is_gone(
    api: APIClient, refused: tuple[Transaction, TransactionLine]
) -> None:
    bad, bad_line = refused
    assert handshake(api).json()["stages"]["rejected"] == 1  # still refused: stays aside
    assert RejectedRecord.objects.get(record_id=bad.pk).attempts == 2
    allow_number_13()
    answer = handshake(api).json()
    assert (answer["stages"]["rejected"], answer["stages"]["waiting"]) == (0, 0)
    assert Transaction.objects.get(pk=bad.pk).number == REFUSED_NUMBER
    assert TransactionLine.objects.filter(pk=bad_line.pk).exists()
    assert stages() == {"acknowledged": 4, "integrated": 4, "waiting": 0, "rejected": 0}


def test_rejected_records_are_retried_after_an_upgrade(
    refused: tuple[Transaction, TransactionLine],
) -> None:
    bad, _ = refused
    allow_number_13()
    outcome = rejected_retry_all()
    assert (outcome[2].applied, outcome[2].still_aside) == (2, 0)
    assert Transaction.objects.filter(pk=bad.pk).exists()


def test_a_newer_state_of_a_rejected_record_replaces_it_and_its_dependents_follow(
    api: APIClient, refused: tuple[Transaction, TransactionLine]
) -> None:
    bad, bad_line = refused
    bad.number = REFUSED_NUMBER + 1  # the satellite renumbered it
    response = push(api, changeset_of(bad), batch_id="batch-2")
    assert response.json()["rejected"] == []
    assert not held()
    assert Transaction.objects.get(pk=bad.pk).lines.get().pk == bad_line.pk


def test_discarding_a_rejected_record_takes_what_waits_for_it_and_logs_the_note(
    refused: tuple[Transaction, TransactionLine],
) -> None:
    bad, _ = refused
    admin = UserFactory(is_staff=True, is_superuser=True)
    with pytest.raises(ValueError, match="note"):
        rejected_discard(records=RejectedRecord.objects.all(), user=admin, note="  ")
    assert len(held()) == 2
    discarded = rejected_discard(
        records=RejectedRecord.objects.filter(record_id=bad.pk),
        user=admin,
        note="Duplicate of invoice 12 entered after the restore",
    )
    assert discarded == 2
    assert not held()
    entry = LogEntry.objects.get(object_id=str(SyncPeer.objects.get(sync_id=2).pk))
    assert entry.user == admin
    assert "Duplicate of invoice 12 entered after the restore" in entry.get_change_message()
    assert str(bad.pk) in entry.get_change_message()


def test_a_stock_line_the_masters_rules_refuse_is_set_aside_and_the_invoice_applied(
    api: APIClient, store: Store
) -> None:
    invoice, line = own_invoice(store)
    # Wire decoding checks each field; only the database knows stock may not go below zero.
    stock = StockLineFactory.build(store=store, item=line.item, quantity=-1)
    body = push(api, changeset_of(invoice, line, stock)).json()
    assert [entry["id"] for entry in body["rejected"]] == [str(stock.pk)]
    assert Transaction.objects.filter(pk=invoice.pk).exists()
    assert not StockLine.objects.filter(pk=stock.pk).exists()


def test_a_forged_record_still_refuses_the_whole_batch(api: APIClient, store: Store) -> None:
    refuse_number_13()
    bad, bad_line = own_invoice(store)
    bad.number = REFUSED_NUMBER
    foreign = TransactionFactory.build(store=TransactionFactory().store, name=None)
    response = push(api, changeset_of(bad, foreign, bad_line))
    assert (response.status_code, response.json()["code"]) == (403, "forbidden_record")
    assert not RejectedRecord.objects.exists()
