"""The master's sync API: authentication, versioning, push rules and pull paging, over HTTP."""

import base64
import gzip
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.response import Response
from rest_framework.test import APIClient

from stores.models import Item, StockLine, Store, Transaction, TransactionLine
from sync.changes import ChangeSet, Cursor
from sync.models import AppliedBatch, ChangeLog, PeerState, SyncPeer
from sync.protocol import API_PREFIX, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION
from sync.push import PushRecord
from sync.services import peer_save, preferences_update
from tests.factories import (
    ItemFactory,
    StockLineFactory,
    StoreFactory,
    TransactionFactory,
    TransactionLineFactory,
    changeset_of,
)

pytestmark = pytest.mark.django_db

HANDSHAKE = f"{API_PREFIX}handshake/"
PUSH = f"{API_PREFIX}push/"
PULL = f"{API_PREFIX}pull/"
PASSWORD = "pw"


def credentials(
    *,
    sync_id: int | None = 2,
    password: str | None = PASSWORD,
    version: str | None = str(PROTOCOL_VERSION),
) -> dict[str, str]:
    """Request headers of satellite `sync_id`; None leaves a header out."""
    headers = {}
    if sync_id is not None:
        headers["HTTP_X_SYNC_ID"] = str(sync_id)
    if version is not None:
        headers["HTTP_X_SYNC_PROTOCOL"] = version
    if password is not None:
        basic = base64.b64encode(f"sync:{password}".encode()).decode()
        headers["HTTP_AUTHORIZATION"] = f"Basic {basic}"
    return headers


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    """The response is the typed error {"code", "message", ...} that `status` and `code` name."""
    body = response.json()
    assert (response.status_code, body.get("code")) == (status, code), body
    assert body["message"]
    return body


@pytest.fixture
def store() -> Store:
    """Configure this site as the master, with satellite 2 hosting store S002; returns S002."""
    preferences_update(sync_id=1, username="sync", password=PASSWORD)
    store = StoreFactory(code="S002")
    peer_save(peer=SyncPeer(sync_id=2, name="A", store_code="S002", url="http://127.0.0.1:9/"))
    return store


@pytest.fixture
def api(store: Store) -> APIClient:
    """A client signed in as satellite 2 with the sync user name and password."""
    client = APIClient()
    client.credentials(**credentials())
    return client


def handshake(api: APIClient, version: int = PROTOCOL_VERSION) -> Response:
    return api.post(HANDSHAKE, {"sync_id": 2, "protocol_version": version}, format="json")


def next_batch(**record: Any) -> dict[str, Any]:
    """The history fields of the batch that follows what the master last applied from 2."""
    state = PeerState.objects.get_or_create(peer=SyncPeer.objects.get(sync_id=2))[0]
    start = Cursor(state.push_txid, state.push_seq)
    fields = {
        "generation": max(state.push_generation, 1),
        "start": str(start),
        "end": str(Cursor(start.txid, start.seq + 1)),
        "digest": "",
    }
    return {**fields, **record}


def push(api: APIClient, changes: ChangeSet, batch_id: str = "batch-1", **record: Any) -> Response:
    body = {"batch_id": batch_id, "changes": changes.to_wire(), **next_batch(**record)}
    return api.post(PUSH, body, format="json")


def own_invoice(store: Store) -> tuple[Transaction, TransactionLine]:
    """An unsaved invoice of `store` with one line, as the satellite hosting it would push it."""
    invoice = TransactionFactory.build(store=store, name=None)
    return invoice, TransactionLineFactory.build(transaction=invoice, item=ItemFactory())


def test_handshake_names_master_and_store_and_its_token_then_authenticates(
    api: APIClient, store: Store
) -> None:
    response = handshake(api)
    assert response.status_code == 200
    body = response.json()
    assert body["role"] == "master"
    assert body["sync_id"] == 1
    assert (body["protocol_min"], body["protocol_max"]) == (PROTOCOL_MIN_VERSION, PROTOCOL_VERSION)
    assert body["store"] == {"id": str(store.pk), "code": "S002", "name": store.name}
    api.credentials(HTTP_X_SYNC_ID="2", HTTP_X_SYNC_PROTOCOL=str(PROTOCOL_VERSION))
    assert api.get(PULL).status_code == 401
    api.credentials(
        HTTP_X_SYNC_ID="2",
        HTTP_X_SYNC_PROTOCOL=str(PROTOCOL_VERSION),
        HTTP_AUTHORIZATION=f"Bearer {body['token']}",
    )
    assert api.get(PULL).status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (credentials(password=None), "credentials_missing"),
        (credentials(sync_id=None), "sync_id_missing"),
        (credentials(password="wrong"), "wrong_credentials"),
        (credentials(sync_id=7), "unknown_sync_id"),
    ],
    ids=["no-credentials", "no-sync-id", "wrong-password", "unknown-sync-id"],
)
def test_unauthenticated_callers_get_401_with_the_reason(
    api: APIClient, headers: dict[str, str], code: str
) -> None:
    api.credentials(**headers)
    assert_error(handshake(api), 401, code)


def test_bearer_token_of_another_satellite_is_refused(api: APIClient) -> None:
    token = handshake(api).json()["token"]
    api.credentials(
        HTTP_X_SYNC_ID="3",
        HTTP_X_SYNC_PROTOCOL=str(PROTOCOL_VERSION),
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert_error(api.get(PULL), 401, "token_invalid")


def test_five_failed_logins_lock_the_satellite_out_even_with_the_right_password(
    api: APIClient,
) -> None:
    api.credentials(**credentials(password="wrong"))
    for _ in range(5):
        assert_error(handshake(api), 401, "wrong_credentials")
    api.credentials(**credentials())
    body = assert_error(handshake(api), 429, "locked_out")
    assert body["retry_after_seconds"] > 0


@pytest.mark.parametrize(
    ("header", "body_version"),
    [
        (str(PROTOCOL_VERSION + 1), PROTOCOL_VERSION),
        (str(PROTOCOL_MIN_VERSION - 1), PROTOCOL_VERSION),
        (None, PROTOCOL_VERSION),
        (str(PROTOCOL_VERSION), PROTOCOL_VERSION + 1),
    ],
    ids=["header-too-new", "header-too-old", "header-missing", "body-too-new"],
)
def test_wrong_protocol_version_is_a_409_naming_the_supported_range(
    api: APIClient, header: str | None, body_version: int
) -> None:
    api.credentials(**credentials(version=header))
    body = assert_error(handshake(api, version=body_version), 409, "version_mismatch")
    assert body["supported"] == {"min": PROTOCOL_MIN_VERSION, "max": PROTOCOL_VERSION}


def test_malformed_json_is_a_400(api: APIClient) -> None:
    response = api.post(PUSH, b'{"batch_id": "b1", "changes": {', content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_json_nested_absurdly_deep_is_a_400(api: APIClient) -> None:
    response = api.post(PUSH, b"[" * 100_000, content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_a_body_past_djangos_form_upload_limit_is_read_and_refused_as_json(
    api: APIClient, store: Store, settings: Settings
) -> None:
    # Django answers bodies past DATA_UPLOAD_MAX_MEMORY_SIZE with an HTML 400 of its own.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"batch_id": "b1", "padding": "0" * 5000, **next_batch()})
    response = api.post(PUSH, body, content_type="application/json")
    assert_error(response, 400, "invalid")


def _set_upsert(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def spoil(wire: dict[str, Any]) -> None:
        wire["upserts"][index][key] = value

    return spoil


def _set_first_row_value(column: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def spoil(wire: dict[str, Any]) -> None:
        wire["upserts"][0]["rows"][0][column] = value

    return spoil


def _add(key: str, entry: Any) -> Callable[[dict[str, Any]], None]:
    def spoil(wire: dict[str, Any]) -> None:
        wire[key] = entry

    return spoil


@pytest.mark.parametrize(
    "spoil",
    [
        _set_upsert(0, "table", "auth_user"),
        _set_upsert(0, "fields", ["id", "store_id"]),
        _set_upsert(1, "rows", [["too", "short"]]),
        _set_first_row_value(0, "not-a-uuid"),
        _set_first_row_value(5, "yesterday"),
        _add("deletes", [{"table": "stores_transaction", "ids": ["not-a-uuid"]}]),
        _add("deletes", {"stores_transaction": []}),
    ],
    ids=[
        "unknown-table",
        "wrong-fields",
        "short-row",
        "bad-uuid",
        "bad-date",
        "bad-delete-id",
        "deletes-not-a-list",
    ],
)
def test_body_that_is_not_a_changeset_is_a_400_and_applies_nothing(
    api: APIClient, store: Store, spoil: Callable[[dict[str, Any]], None]
) -> None:
    wire = changeset_of(*own_invoice(store)).to_wire()
    spoil(wire)
    response = api.post(PUSH, {"batch_id": "b1", "changes": wire, **next_batch()}, format="json")
    assert_error(response, 400, "malformed")
    assert not Transaction.objects.exists()
    assert not AppliedBatch.objects.exists()


def test_push_without_a_batch_id_is_a_400(api: APIClient, store: Store) -> None:
    response = api.post(PUSH, {"changes": changeset_of().to_wire(), **next_batch()}, format="json")
    assert_error(response, 400, "invalid")


def test_oversized_body_is_a_413(api: APIClient, store: Store, settings: Settings) -> None:
    settings.SYNC_MAX_BODY_BYTES = 300
    response = push(api, changeset_of(*own_invoice(store)))
    assert_error(response, 413, "too_large")
    assert not Transaction.objects.exists()


def test_gzip_bomb_is_a_413(api: APIClient, settings: Settings) -> None:
    settings.SYNC_MAX_BODY_BYTES = 1000
    bomb = gzip.compress(json.dumps({"batch_id": "b1", "padding": "0" * 100_000}).encode())
    assert len(bomb) < 1000
    response = api.post(PUSH, bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert_error(response, 413, "too_large")


def test_gzip_compressed_push_is_applied_and_marked_with_the_satellite(
    api: APIClient, store: Store
) -> None:
    invoice, line = own_invoice(store)
    record = next_batch()
    body = {"batch_id": "b1", "changes": changeset_of(invoice, line).to_wire(), **record}
    response = api.post(
        PUSH,
        gzip.compress(json.dumps(body).encode()),
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "batch_id": "b1",
        "applied": 2,
        "buffered": 0,
        "duplicate": False,
        "push": record,
    }
    assert TransactionLine.objects.get().transaction == invoice
    assert set(
        ChangeLog.objects.filter(record_id__in=[invoice.pk, line.pk]).values_list(
            "source_site", flat=True
        )
    ) == {2}


def _item(own: Store, other: Store) -> tuple[ChangeSet, uuid.UUID]:
    item = ItemFactory.build()
    return changeset_of(item), item.pk


def _other_stores_invoice(own: Store, other: Store) -> tuple[ChangeSet, uuid.UUID]:
    invoice = TransactionFactory.build(store=other, name=None)
    return changeset_of(invoice), invoice.pk


def _line_overwriting_other_stores_line(own: Store, other: Store) -> tuple[ChangeSet, uuid.UUID]:
    foreign = TransactionLineFactory(transaction__store=other)
    invoice = TransactionFactory.build(store=own, name=None)
    line = TransactionLineFactory.build(id=foreign.pk, transaction=invoice, item=foreign.item)
    return changeset_of(invoice, line), foreign.pk


def _line_added_to_other_stores_invoice(own: Store, other: Store) -> tuple[ChangeSet, uuid.UUID]:
    foreign = TransactionFactory(store=other)
    line = TransactionLineFactory.build(transaction=foreign, item=ItemFactory())
    return changeset_of(line), foreign.pk


def _delete_of_other_stores_invoice(own: Store, other: Store) -> tuple[ChangeSet, uuid.UUID]:
    foreign = TransactionFactory(store=other)
    return changeset_of(deleted=(foreign,)), foreign.pk


def _other_stores_stock(own: Store, other: Store) -> tuple[ChangeSet, uuid.UUID]:
    stock = StockLineFactory.build(store=other, item=ItemFactory())
    return changeset_of(stock), stock.pk


@pytest.mark.parametrize(
    "offend",
    [
        _item,
        _other_stores_invoice,
        _line_overwriting_other_stores_line,
        _line_added_to_other_stores_invoice,
        _delete_of_other_stores_invoice,
        _other_stores_stock,
    ],
    ids=lambda offend: offend.__name__.strip("_"),
)
def test_push_of_a_record_the_satellite_does_not_own_is_403_naming_it_and_applies_nothing(
    api: APIClient,
    store: Store,
    offend: Callable[[Store, Store], tuple[ChangeSet, uuid.UUID]],
) -> None:
    changes = changeset_of(*own_invoice(store))
    offending, offending_id = offend(store, StoreFactory(code="S009"))
    for name, rows in offending.upserts.items():
        changes.upserts.setdefault(name, []).extend(rows)
    changes.deletes.update(offending.deletes)
    before = {
        model: list(model.objects.order_by("pk").values())
        for model in (Item, Transaction, TransactionLine, StockLine)
    }
    body = assert_error(push(api, changes), 403, "forbidden_record")
    assert str(offending_id) in body["message"]
    after = {model: list(model.objects.order_by("pk").values()) for model in before}
    assert after == before
    assert not AppliedBatch.objects.exists()


def test_push_that_breaks_a_master_constraint_is_a_typed_409_and_applies_nothing(
    api: APIClient, store: Store
) -> None:
    invoice, line = own_invoice(store)
    line.quantity = 0
    assert_error(push(api, changeset_of(invoice, line)), 409, "rejected_record")
    assert not Transaction.objects.filter(pk=invoice.pk).exists()
    assert not AppliedBatch.objects.exists()


def test_resent_batch_is_acknowledged_as_duplicate_and_changes_nothing(
    api: APIClient, store: Store
) -> None:
    invoice, line = own_invoice(store)
    assert push(api, changeset_of(invoice, line), batch_id="b1").json()["duplicate"] is False
    logged = ChangeLog.objects.count()
    invoice.status = Transaction.Status.FINALISED
    record = PushRecord.of(PeerState.objects.get(peer__sync_id=2)).to_wire()
    # Sent again as it was, under the same id: the master's record is already past it.
    response = push(api, changeset_of(invoice, line), batch_id="b1", **next_batch(start="0.0"))
    assert response.status_code == 200
    assert response.json() == {
        "batch_id": "b1",
        "applied": 0,
        "buffered": 0,
        "duplicate": True,
        "push": record,
    }
    assert Transaction.objects.get().status == Transaction.Status.DRAFT
    assert ChangeLog.objects.count() == logged
    assert AppliedBatch.objects.get().records == 2


def test_handshake_gives_the_masters_record_of_the_satellites_push_history(
    api: APIClient, store: Store
) -> None:
    assert handshake(api).json()["push"] == PushRecord().to_wire()
    record = next_batch(digest="d1")
    assert push(api, changeset_of(*own_invoice(store)), **record).status_code == 200
    assert handshake(api).json()["push"] == record


def test_a_batch_older_than_the_last_applied_is_refused_as_stale_and_changes_nothing(
    api: APIClient, store: Store
) -> None:
    invoice, line = own_invoice(store)
    line.quantity = 20
    late = changeset_of(invoice, line).to_wire()
    line.quantity = 30
    assert push(api, changeset_of(invoice, line), batch_id="newer", generation=2).status_code == 200
    applied = PushRecord.of(PeerState.objects.get(peer__sync_id=2)).to_wire()
    # Sent before the newer one, delivered after it: same start, or an older generation.
    for batch_id, record in [
        ("late", {"generation": 2, "start": "0.0"}),
        ("old", {"generation": 1}),
    ]:
        response = api.post(
            PUSH, {"batch_id": batch_id, "changes": late, **next_batch(**record)}, format="json"
        )
        assert assert_error(response, 409, "stale_batch")["push"] == applied
        assert TransactionLine.objects.get().quantity == 30
    assert AppliedBatch.objects.count() == 1


def test_a_newer_generation_opens_a_new_history_from_any_start(
    api: APIClient, store: Store
) -> None:
    invoice, line = own_invoice(store)
    assert push(api, changeset_of(invoice, line), batch_id="first").status_code == 200
    line.quantity += 1
    opened = next_batch(generation=2, start="0.0", end="0.7", digest="d2")
    response = push(api, changeset_of(invoice, line), batch_id="second", **opened)
    assert response.status_code == 200, response.json()
    assert PushRecord.of(PeerState.objects.get(peer__sync_id=2)).to_wire() == opened
    assert TransactionLine.objects.get().quantity == line.quantity


def test_a_pushed_line_whose_item_the_master_lacks_is_a_409_and_applies_nothing(
    api: APIClient, store: Store
) -> None:
    invoice = TransactionFactory.build(store=store, name=None)
    line = TransactionLineFactory.build(transaction=invoice, item=ItemFactory.build())
    body = assert_error(push(api, changeset_of(invoice, line)), 409, "missing_parent")
    assert str(line.pk) in body["message"]
    assert not Transaction.objects.exists()
    assert not AppliedBatch.objects.exists()


def test_a_pushed_number_the_masters_copy_holds_moves_that_copy_aside(
    api: APIClient, store: Store
) -> None:
    # Satellite 2 deleted a draft and its number went to a new transaction before the delete
    # reached the master (numbering before the per-store counter).
    old = TransactionFactory(store=store, number=7)
    invoice, line = own_invoice(store)
    invoice.number = 7
    assert push(api, changeset_of(invoice, line)).status_code == 200
    assert Transaction.objects.get(pk=invoice.pk).number == 7
    assert Transaction.objects.get(pk=old.pk).number == 8


def pulled_ids(page: dict[str, Any]) -> set[str]:
    return {
        uuid.UUID(row[0]).hex for upsert in page["changes"]["upserts"] for row in upsert["rows"]
    }


# The pull horizon leaves out changes of transactions still running, the test's own included, so
# pulls read committed data.
@pytest.mark.django_db(transaction=True)
def test_pull_pages_master_data_by_cursor_until_nothing_remains(
    api: APIClient, store: Store
) -> None:
    expected = {store.pk.hex} | {item.pk.hex for item in ItemFactory.create_batch(3)}
    pages, cursor = [], "0.0"
    for _ in range(3):
        page = api.get(PULL, {"cursor": cursor, "limit": 2}).json()
        pages.append(page)
        cursor = page["next_cursor"]
    assert [(page["count"], page["remaining"]) for page in pages] == [(2, 2), (2, 0), (0, 0)]
    assert pages[2]["next_cursor"] == pages[1]["next_cursor"]
    assert pulled_ids(pages[0]) | pulled_ids(pages[1]) == expected


@pytest.mark.django_db(transaction=True)
def test_initial_pull_also_brings_the_satellites_own_store_data_and_no_other_store(
    api: APIClient, store: Store
) -> None:
    own_line = TransactionLineFactory(transaction__store=store)
    own_stock = StockLineFactory(store=store)
    other_line = TransactionLineFactory(transaction__store=StoreFactory(code="S009"))
    own = {own_line.pk.hex, own_line.transaction_id.hex, own_stock.pk.hex}
    other = {other_line.pk.hex, other_line.transaction_id.hex}

    initial = api.get(PULL, {"initial": "true", "limit": 100}).json()
    later = api.get(PULL, {"limit": 100}).json()

    assert initial["remaining"] == later["remaining"] == 0
    assert own <= pulled_ids(initial)
    assert not other & pulled_ids(initial)
    assert not (own | other) & pulled_ids(later)
    assert pulled_ids(initial) - pulled_ids(later) == own


def test_pull_with_a_bad_cursor_is_a_400(api: APIClient) -> None:
    assert_error(api.get(PULL, {"cursor": "yesterday"}), 400, "invalid")


def test_openapi_schema_documents_the_three_endpoints(client: Client) -> None:
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = response.content.decode()
    for path in (HANDSHAKE, PUSH, PULL):
        assert path in schema


@pytest.mark.usefixtures("satellite")
def test_satellite_refuses_sync_requests_as_not_master() -> None:
    client = APIClient()
    client.credentials(**credentials())
    assert_error(handshake(client), 409, "not_master")
