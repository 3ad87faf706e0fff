"""Initialisation from a snapshot: current rows in scope, by table and primary key, resumable."""

import uuid
from collections import Counter
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from stores.models import Item, Name, Store, Transaction
from sync.changes import Cursor
from sync.models import ChangeLog, PeerState, SyncPeer
from sync.protocol import API_PREFIX
from sync.registry import SYNCED_TABLES
from sync.services import peer_save, preferences_update
from sync.snapshot import snapshot_progress
from tests.factories import (
    ItemFactory,
    NameFactory,
    StockLineFactory,
    StoreFactory,
    TransactionFactory,
    TransactionLineFactory,
)
from tests.sync.test_protocol import PASSWORD, assert_error, credentials, enrol

pytestmark = pytest.mark.django_db

SNAPSHOT = f"{API_PREFIX}snapshot/"
FINALISED = Transaction.Status.FINALISED


@pytest.fixture
def store() -> Store:
    """This site is the master, with satellite 2 hosting store S002; returns S002."""
    preferences_update(sync_id=1, username="sync", password=PASSWORD)
    store = StoreFactory(code="S002")
    peer_save(peer=SyncPeer(sync_id=2, name="A", store_code="S002", url="http://127.0.0.1:9/"))
    return store


@pytest.fixture
def api(store: Store) -> APIClient:
    client = APIClient()
    client.credentials(**credentials(key=enrol()))
    return client


def page_of(api: APIClient, limit: int, page: dict[str, Any] | None = None) -> dict[str, Any]:
    """The snapshot page after `page` (None: the first page, which starts the snapshot)."""
    query: dict[str, Any] = {"limit": limit}
    if page is not None:
        query.update(cursor=page["cursor"], table=page["table"])
        if page["after"]:
            query["after"] = page["after"]
    answer = api.get(SNAPSHOT, query)
    assert answer.status_code == 200, answer.json()
    return dict(answer.json())


def snapshot_pages(api: APIClient, limit: int) -> list[dict[str, Any]]:
    pages = [page_of(api, limit)]
    while not pages[-1]["done"]:
        pages.append(page_of(api, limit, pages[-1]))
        assert len(pages) < 1000
    return pages


def rows_of(pages: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(table, id, row by field name) of every row the pages carry, in the order they came."""
    return [
        (entry["table"], row[0], dict(zip(entry["fields"], row, strict=True)))
        for page in pages
        for entry in page["changes"]["upserts"]
        for row in entry["rows"]
    ]


def ids(*records: Any) -> set[str]:
    return {record.pk.hex for record in records}


def test_snapshot_pages_carry_every_current_row_in_scope_once_parents_first(
    api: APIClient, store: Store
) -> None:
    items = ItemFactory.create_batch(7)
    NameFactory.create_batch(4)
    # An item renamed ten times: ten changes in the log, one row in the snapshot.
    for n in range(10):
        Item.objects.filter(pk=items[0].pk).update(name=f"Renamed {n}")
    own = TransactionFactory(store=store)
    own_lines = TransactionLineFactory.create_batch(3, transaction=own)
    stock = StockLineFactory.create_batch(2, store=store)
    deleted_draft = TransactionFactory(store=store)
    deleted_line = TransactionLineFactory(transaction=deleted_draft)
    deleted = ids(deleted_draft, deleted_line)
    deleted_draft.delete()
    # Another store's outbound transfer to S002 (finalised), and the inbound made elsewhere for
    # one of S002's own outbounds: both concern S002. Its draft to S002 and its other
    # business do not.
    other = StoreFactory(code="S009")
    to_us = NameFactory(kind=Name.Kind.STORE, store=store)
    to_them = NameFactory(kind=Name.Kind.STORE, store=other)
    outbound = TransactionFactory(
        store=other, kind=Transaction.Kind.CUSTOMER_INVOICE, status=FINALISED, name=to_us
    )
    outbound_lines = TransactionLineFactory.create_batch(2, transaction=outbound)
    ours_out = TransactionFactory(
        store=store, kind=Transaction.Kind.CUSTOMER_INVOICE, status=FINALISED, name=to_them
    )
    their_in = TransactionFactory(store=other, status=FINALISED, transfer_of=ours_out)
    their_in_line = TransactionLineFactory(transaction=their_in)
    draft_to_us = TransactionFactory(
        store=other, kind=Transaction.Kind.CUSTOMER_INVOICE, name=to_us
    )
    TransactionLineFactory(transaction=draft_to_us)
    TransactionLineFactory(transaction__store=other)
    StockLineFactory(store=other)
    assert ChangeLog.objects.filter(record_id=items[0].pk).count() >= 10

    pages = snapshot_pages(api, limit=3)
    rows = rows_of(pages)

    assert all(page["count"] <= 3 for page in pages)
    assert pages[0]["total"] == len(rows)
    assert all(page["total"] is None for page in pages[1:])
    assert {page["cursor"] for page in pages} == {pages[0]["cursor"]}
    assert Counter(record_id for _, record_id, _ in rows).most_common(1)[0][1] == 1
    tables = [table.name for table in SYNCED_TABLES]
    came = [table for table, _, _ in rows]
    assert came == sorted(came, key=tables.index)
    by_table: dict[str, set[str]] = {}
    for table, record_id, _ in rows:
        by_table.setdefault(table, set()).add(record_id)
    assert by_table["stores_store"] == ids(*Store.objects.all())
    assert by_table["stores_item"] == ids(*Item.objects.all())
    assert by_table["stores_name"] == ids(*Name.objects.all())
    assert by_table["stores_transaction"] == ids(own, outbound, ours_out, their_in)
    assert by_table["stores_transactionline"] == ids(*own_lines, *outbound_lines, their_in_line)
    assert by_table["stores_stockline"] == ids(*stock)
    assert not deleted & {record_id for _, record_id, _ in rows}
    assert ChangeLog.objects.filter(record_id__in=[uuid.UUID(d) for d in deleted]).exists()
    # Within a table, in primary-key order: what keyset pagination resumes from.
    for table in tables:
        in_table = [record_id for name, record_id, _ in rows if name == table]
        assert in_table == sorted(in_table, key=uuid.UUID)
    renamed = next(row for _, record_id, row in rows if record_id == items[0].pk.hex)
    assert renamed["name"] == "Renamed 9"


def test_a_resumed_snapshot_goes_on_after_the_last_row_received(api: APIClient) -> None:
    ItemFactory.create_batch(12)
    whole = rows_of(snapshot_pages(api, limit=5))

    first = page_of(api, 5)
    second = page_of(api, 5, first)
    # The link dropped with the second page: the satellite asks again from the first one's end.
    again = page_of(api, 5, first)
    pages = [first, again]
    while not pages[-1]["done"]:
        pages.append(page_of(api, 5, pages[-1]))

    assert again["changes"] == second["changes"]
    assert [record_id for _, record_id, _ in rows_of(pages)] == [
        record_id for _, record_id, _ in rows_of(snapshot_pages(api, limit=5))
    ]
    assert {record_id for _, record_id, _ in rows_of(pages)} == {r for _, r, _ in whole}


def test_a_finished_snapshot_leaves_the_masters_bookkeeping_at_its_position(
    api: APIClient,
) -> None:
    ItemFactory.create_batch(3)
    state = PeerState.objects.get(peer__sync_id=2)
    assert state.last_success_at is None

    pages = snapshot_pages(api, limit=2)

    state.refresh_from_db()
    assert str(Cursor(state.pull_txid, state.pull_seq)) == pages[0]["cursor"]
    assert Cursor(state.served_txid, state.served_seq) >= Cursor.parse("0.1")
    assert state.last_success_at is not None


def test_a_snapshot_resumed_after_the_master_pruned_past_it_must_start_again(
    api: APIClient,
) -> None:
    ItemFactory.create_batch(4)
    first = page_of(api, 2)
    PeerState.objects.filter(peer__sync_id=2).update(log_expired_at=timezone.now())
    query = {"cursor": first["cursor"], "table": first["table"], "after": first["after"]}

    assert_error(api.get(SNAPSHOT, {**query, "limit": 2}), 409, "reinitialise_required")
    # A new snapshot is served, and clears the mark.
    assert page_of(api, 2)["total"] is not None
    assert not PeerState.objects.filter(log_expired_at__isnull=False).exists()


def test_a_snapshot_page_without_its_table_is_a_400(api: APIClient) -> None:
    assert_error(api.get(SNAPSHOT, {"cursor": "0.0"}), 400, "invalid")


def test_initialisation_progress_says_done_total_rate_and_time_left() -> None:
    assert snapshot_progress(done=900, total=2000, done_here=500, seconds=2.0) == (
        "Initialising: 900 of 2000 records, 250 records/s, about 4 s left."
    )
    assert "about 2 min left" in snapshot_progress(
        done=0, total=30_000, done_here=1000, seconds=4.0
    )
