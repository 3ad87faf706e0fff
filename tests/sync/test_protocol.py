"""The master's sync API: authentication, versioning, push rules and pull paging, over HTTP."""

import base64
import gzip
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.response import Response
from rest_framework.test import APIClient

from stores.models import Item, StockLine, Store, Transaction, TransactionLine
from sync.changes import ChangeSet, Cursor
from sync.errors import ErrorCode
from sync.models import AppliedBatch, ChangeLog, PeerState, SyncPeer
from sync.protocol import API_PREFIX, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION
from sync.push import PushRecord
from sync.registry import MASTER_DATA_SCOPE, SYNCED_TABLES
from sync.services import peer_save, preferences_update
from tests.factories import (
    ItemFactory,
    NameFactory,
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
    password: str | None = None,
    key: str | None = None,
    token: str | None = None,
    username: str = "sync",
    version: str | None = str(PROTOCOL_VERSION),
) -> dict[str, str]:
    """Request headers of satellite `sync_id` with one credential; None leaves a header out."""
    headers = {}
    if sync_id is not None:
        headers["HTTP_X_SYNC_ID"] = str(sync_id)
    if version is not None:
        headers["HTTP_X_SYNC_PROTOCOL"] = version
    if password is not None:
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        headers["HTTP_AUTHORIZATION"] = f"Basic {basic}"
    elif key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Key {key}"
    elif token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return headers


def enrol(sync_id: int = 2, **headers: str) -> str:
    """Enrol satellite `sync_id` with the shared password and confirm its key; returns the key."""
    client = APIClient(**headers)
    client.credentials(**credentials(sync_id=sync_id, password=PASSWORD))
    body = {"sync_id": sync_id, "protocol_version": PROTOCOL_VERSION}
    answer = client.post(HANDSHAKE, body, format="json")
    assert answer.status_code == 200, answer.json()
    key = answer.json()["key"]
    client.credentials(**credentials(sync_id=sync_id, key=key))
    assert client.post(HANDSHAKE, body, format="json").status_code == 200
    return str(key)


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    """The response is the typed error {"code", "message", ...} that `status` and `code` name."""
    body = response.json()
    assert (response.status_code, body.get("code")) == (status, code), body
    assert code in ErrorCode.values
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
def key(store: Store) -> str:
    """Satellite 2's key, enrolled with the shared password."""
    return enrol()


@pytest.fixture
def api(key: str) -> APIClient:
    """A client signed in as satellite 2 with its key."""
    client = APIClient()
    client.credentials(**credentials(key=key))
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
    api: APIClient, key: str, header: str | None, body_version: int
) -> None:
    api.credentials(**credentials(key=key, version=header))
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
    body = response.json()
    assert body | {"stages": None} == {
        "batch_id": "b1",
        "applied": 2,
        "buffered": 0,
        "duplicate": False,
        "push": record,
        "rejected": [],
        "waiting": 0,
        "stages": None,
    }
    assert (body["stages"]["acknowledged"], body["stages"]["integrated"]) == (2, 2)
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


def test_resent_batch_is_acknowledged_as_duplicate_and_changes_nothing(
    api: APIClient, store: Store
) -> None:
    invoice, line = own_invoice(store)
    assert push(api, changeset_of(invoice, line), batch_id="b1").json()["duplicate"] is False
    # Changed on the master since: applying the batch again would put the old number back.
    Transaction.objects.update(number=invoice.number + 1)
    logged = ChangeLog.objects.count()
    record = PushRecord.of(PeerState.objects.get(peer__sync_id=2)).to_wire()
    # Sent again as it was, under the same id: the master's record is already past it.
    response = push(api, changeset_of(invoice, line), batch_id="b1", **next_batch(start="0.0"))
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("batch_id", "applied", "duplicate", "push")} == {
        "batch_id": "b1",
        "applied": 0,
        "duplicate": True,
        "push": record,
    }
    assert body["stages"]["acknowledged"] == 2  # counted once
    assert Transaction.objects.get().number == invoice.number + 1
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
    """Every record a page carries, changed or deleted."""
    changes = page["changes"]
    upserted = {uuid.UUID(row[0]).hex for upsert in changes["upserts"] for row in upsert["rows"]}
    deleted = {uuid.UUID(i).hex for delete in changes["deletes"] for i in delete["ids"]}
    return upserted | deleted


# The pull horizon leaves out changes of transactions still running, the test's own included, so
# pulls read committed data.
@pytest.mark.django_db(transaction=True)
def test_pull_pages_master_data_by_cursor_until_nothing_remains(
    api: APIClient, store: Store
) -> None:
    made = {store.pk.hex} | {item.pk.hex for item in ItemFactory.create_batch(3)}
    # Every master record the log holds. On SQLite the flush after an earlier transactional test
    # deletes rows one by one, so the capture triggers can leave a delete marker: it pages like
    # the rest (the message names it).
    logged = {
        record_id.hex
        for record_id in ChangeLog.objects.filter(MASTER_DATA_SCOPE).values_list(
            "record_id", flat=True
        )
    }
    assert made <= logged
    pages, cursor = [], "0.0"
    for _ in range(len(logged) // 2 + 2):
        page = api.get(PULL, {"cursor": cursor, "limit": 2}).json()
        pages.append(page)
        cursor = page["next_cursor"]
    counts = [page["count"] for page in pages]
    assert all(count == 2 for count in counts[: len(logged) // 2]), counts
    assert sum(counts) == len(logged), (counts, logged - made)
    assert [page["remaining"] for page in pages] == [
        len(logged) - sum(counts[: i + 1]) for i in range(len(pages))
    ]
    assert (counts[-1], pages[-1]["next_cursor"]) == (0, pages[-2]["next_cursor"])
    assert set().union(*(pulled_ids(page) for page in pages)) == logged


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


def test_openapi_schema_documents_the_four_endpoints(client: Client) -> None:
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = response.content.decode()
    for path in (HANDSHAKE, PUSH, PULL, f"{API_PREFIX}snapshot/"):
        assert path in schema


@pytest.mark.usefixtures("satellite")
def test_satellite_refuses_sync_requests_as_not_master() -> None:
    client = APIClient()
    client.credentials(**credentials(password=PASSWORD))
    assert_error(handshake(client), 409, "not_master")


def synced_rows() -> dict[str, list[tuple[Any, ...]]]:
    """Every synced table's rows, all columns, in primary-key order."""
    return {
        table.name: list(
            table.model._default_manager.order_by("pk").values_list(*table.field_names)
        )
        for table in SYNCED_TABLES
    }


@dataclass(frozen=True)
class BadValue:
    """A record the satellite would push with one value the model's rules refuse."""

    table: str
    field: str
    spoil: Callable[[Transaction, TransactionLine], Any]


def _transaction(**values: Any) -> Callable[[Transaction, TransactionLine], Any]:
    def spoil(invoice: Transaction, line: TransactionLine) -> Any:
        for name, value in values.items():
            setattr(invoice, name, value)
        return invoice

    return spoil


def _line(**values: Any) -> Callable[[Transaction, TransactionLine], Any]:
    def spoil(invoice: Transaction, line: TransactionLine) -> Any:
        for name, value in values.items():
            setattr(line, name, value)
        return line

    return spoil


def _item_code(invoice: Transaction, line: TransactionLine) -> Any:
    line.item.code = "C" * 31
    return line.item


def _name_kind(invoice: Transaction, line: TransactionLine) -> Any:
    return NameFactory.build(kind="x")


BAD_VALUES = {
    "bogus-status": BadValue("stores_transaction", "status", _transaction(status="bogus")),
    "kind-x": BadValue("stores_transaction", "kind", _transaction(kind="x")),
    "name-kind-x": BadValue("stores_name", "kind", _name_kind),
    "true-as-quantity": BadValue("stores_transactionline", "quantity", _line(quantity=True)),
    "float-quantity": BadValue("stores_transactionline", "quantity", _line(quantity=1.9)),
    "quantity-2**31": BadValue("stores_transactionline", "quantity", _line(quantity=2**31)),
    "negative-number": BadValue("stores_transaction", "number", _transaction(number=-1)),
    "price-1e20": BadValue(
        "stores_transactionline", "cost_price", _line(cost_price=Decimal("1e20"))
    ),
    "price-3-places": BadValue(
        "stores_transactionline", "sell_price", _line(sell_price=Decimal("0.125"))
    ),
    "price-nan": BadValue("stores_transactionline", "sell_price", _line(sell_price="NaN")),
    "date-not-iso": BadValue("stores_transaction", "date", _transaction(date="01/11/2026")),
    "1-mb-string": BadValue("stores_transactionline", "batch", _line(batch="B" * 2**20)),
    "nul-byte": BadValue("stores_transactionline", "batch", _line(batch="B\x00")),
    "missing-batch": BadValue("stores_transactionline", "batch", _line(batch=None)),
    "over-long-item-code": BadValue("stores_item", "code", _item_code),
    "negative-on-customer-invoice": BadValue(
        "stores_transactionline",
        "quantity",
        lambda invoice, line: _line(quantity=-5)(
            _transaction(kind="customer_invoice", status="finalised")(invoice, line), line
        ),
    ),
    "zero-quantity": BadValue("stores_transactionline", "quantity", _line(quantity=0)),
}


def bad_push(store: Store, case: BadValue) -> tuple[ChangeSet, uuid.UUID]:
    """A push of one of `store`'s invoices carrying the bad value; the refused record's id."""
    invoice, line = own_invoice(store)
    refused = case.spoil(invoice, line)
    extra = [] if refused in (invoice, line) else [refused]
    return changeset_of(invoice, line, *extra), refused.pk


@pytest.mark.parametrize("case", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_pushed_value_the_model_refuses_is_a_400_naming_it_and_applies_nothing(
    api: APIClient, store: Store, case: BadValue
) -> None:
    TransactionFactory(store=store)
    changeset, record_id = bad_push(store, case)
    before = synced_rows()
    logged = ChangeLog.objects.count()
    message = assert_error(push(api, changeset), 400, "malformed")["message"]
    assert message.startswith(f"{case.table} {record_id}: {case.field} "), message
    assert len(message) < 300
    assert synced_rows() == before
    assert ChangeLog.objects.count() == logged
    assert not AppliedBatch.objects.exists()


@pytest.mark.parametrize(
    ("kind", "quantity", "refused"),
    [
        (Transaction.Kind.CUSTOMER_INVOICE, -5, True),
        (Transaction.Kind.SUPPLIER_INVOICE, -5, True),
        (Transaction.Kind.INVENTORY_ADJUSTMENT, -5, False),
        (Transaction.Kind.CUSTOMER_INVOICE, 5, False),
    ],
)
def test_a_pushed_line_of_a_transaction_the_master_holds_follows_its_kinds_sign_rule(
    api: APIClient, store: Store, kind: str, quantity: int, refused: bool
) -> None:
    invoice = TransactionFactory(store=store, kind=kind, name=None)
    line = TransactionLineFactory.build(transaction=invoice, item=ItemFactory(), quantity=quantity)
    before = synced_rows()
    response = push(api, changeset_of(line))
    if refused:
        message = assert_error(response, 400, "malformed")["message"]
        assert message.startswith(f"stores_transactionline {line.pk}: quantity -5"), message
        assert synced_rows() == before
        assert not AppliedBatch.objects.exists()
    else:
        assert response.status_code == 200, response.json()
        assert TransactionLine.objects.get(pk=line.pk).quantity == quantity


def test_a_batch_id_resent_with_other_changes_is_a_409_and_applies_nothing(
    api: APIClient, store: Store
) -> None:
    invoice, line = own_invoice(store)
    assert push(api, changeset_of(invoice, line), batch_id="b1").status_code == 200
    before = synced_rows()
    line.quantity += 1
    body = assert_error(
        push(api, changeset_of(invoice, line), batch_id="b1"), 409, "batch_id_reused"
    )
    assert "nothing of it was" in body["message"]
    assert synced_rows() == before
    assert AppliedBatch.objects.get().records == 2


@pytest.mark.parametrize("cursor", [f"{2**63}.0", f"0.{2**63}", f"{2**64}.{2**64}"])
def test_cursor_numbers_from_2_to_the_63_are_refused(api: APIClient, cursor: str) -> None:
    with pytest.raises(ValueError, match="below 2"):
        Cursor.parse(cursor)
    assert_error(api.get(PULL, {"cursor": cursor}), 400, "invalid")


def test_the_highest_cursor_the_change_log_can_hold_is_read() -> None:
    assert Cursor.parse(f"{2**63 - 1}.{2**63 - 1}") == Cursor(2**63 - 1, 2**63 - 1)


@pytest.mark.parametrize("bound", ["start", "end"])
def test_a_push_whose_range_passes_2_to_the_63_is_a_400_and_applies_nothing(
    api: APIClient, store: Store, bound: str
) -> None:
    invoice, line = own_invoice(store)
    response = push(api, changeset_of(invoice, line), **{bound: f"{2**63}.0"})
    assert_error(response, 400, "malformed")
    assert not Transaction.objects.exists()
    assert not AppliedBatch.objects.exists()
