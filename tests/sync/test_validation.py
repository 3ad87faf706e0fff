"""Validation of preferences and the Sync with list, and of every received row's values."""

import json
import uuid
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.db.models import UUIDField

from sync.changes import ChangeSet, WireError
from sync.integration import changeset_apply
from sync.models import BufferedRecord, SyncPeer, SyncPreferences
from sync.registry import TABLES_BY_NAME
from sync.selectors import preferences_get
from sync.services import peer_delete, peer_save, preferences_update
from tests.factories import StoreFactory, changeset_of
from tests.sync.test_protocol import BAD_VALUES, BadValue, bad_push, own_invoice, synced_rows

pytestmark = pytest.mark.django_db


def peer(**fields: object) -> SyncPeer:
    values = {"sync_id": 2, "name": "Clinic", "store_code": "S001", "url": "http://127.0.0.1:9002/"}
    values.update(fields)
    return SyncPeer(**values)


@pytest.mark.parametrize("sync_id", [0, 65, 100])
def test_sync_id_outside_1_to_64_is_refused(sync_id: int) -> None:
    with pytest.raises(ValidationError) as error:
        preferences_update(sync_id=sync_id)
    assert "sync_id" in error.value.message_dict
    assert preferences_get().sync_id == 1


@pytest.mark.parametrize("sync_id", [1, 2, 64])
def test_sync_id_inside_1_to_64_is_accepted(sync_id: int) -> None:
    assert preferences_update(sync_id=sync_id).sync_id == sync_id


def test_database_refuses_sync_id_outside_range_even_without_validation() -> None:
    preferences = preferences_get()
    preferences.sync_id = 65
    with pytest.raises(IntegrityError):
        preferences.save()


def test_master_stores_only_a_password_hash() -> None:
    preferences = preferences_update(password="s3cret")
    assert preferences.password == ""
    assert "s3cret" not in preferences.password_hash
    assert preferences.check_password("s3cret")
    assert not preferences.check_password("wrong")


def test_satellite_keeps_the_password_it_must_send_to_the_master() -> None:
    preferences = preferences_update(sync_id=3, password="s3cret")
    assert preferences.password == "s3cret"
    assert preferences.check_password("s3cret")


def test_peer_sync_ids_are_unique() -> None:
    stores = StoreFactory.create_batch(2)
    peer_save(peer=peer(sync_id=2, store_code=stores[0].code))
    with pytest.raises(ValidationError) as error:
        peer_save(peer=peer(sync_id=2, store_code=stores[1].code))
    assert "sync_id" in error.value.message_dict


def test_peer_sync_id_must_differ_from_own(satellite: int) -> None:
    with pytest.raises(ValidationError, match="own Sync ID"):
        peer_save(peer=peer(sync_id=satellite))


@pytest.mark.parametrize("sync_id", [0, 65])
def test_peer_sync_id_outside_range_is_refused(sync_id: int) -> None:
    with pytest.raises(ValidationError) as error:
        peer_save(peer=peer(sync_id=sync_id, store_code=StoreFactory().code))
    assert "sync_id" in error.value.message_dict


def test_satellite_lists_only_the_master(satellite: int) -> None:
    with pytest.raises(ValidationError, match="master only"):
        peer_save(peer=peer(sync_id=5))


def test_satellite_lists_exactly_one_server(satellite: int) -> None:
    peer_save(peer=peer(sync_id=1, name="Master"))
    with pytest.raises(ValidationError):
        peer_save(peer=peer(sync_id=1, name="Second master", url="http://127.0.0.1:9100/"))
    assert SyncPeer.objects.count() == 1


def test_master_lists_only_satellites() -> None:
    with pytest.raises(ValidationError, match="satellites only"):
        peer_save(peer=peer(sync_id=1, store_code=StoreFactory().code))


def test_master_peer_must_name_a_store_that_exists() -> None:
    with pytest.raises(ValidationError) as error:
        peer_save(peer=peer(store_code="NOPE"))
    assert "NOPE" in error.value.message_dict["store_code"][0]


def test_master_allows_one_satellite_per_store() -> None:
    store = StoreFactory()
    peer_save(peer=peer(sync_id=2, store_code=store.code))
    with pytest.raises(ValidationError, match="already hosted"):
        peer_save(peer=peer(sync_id=3, store_code=store.code))


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:8000", "javascript:alert(1)"])
def test_peer_url_must_be_http_or_https(url: str) -> None:
    with pytest.raises(ValidationError) as error:
        peer_save(peer=peer(url=url, store_code=StoreFactory().code))
    assert "url" in error.value.message_dict


def test_peer_with_valid_values_is_saved_and_removed() -> None:
    store = StoreFactory()
    peer_save(peer=peer(sync_id=7, store_code=store.code, url="https://clinic.example.org/"))
    assert SyncPeer.objects.filter(sync_id=7).exists()
    peer_delete(sync_id=7)
    assert not SyncPeer.objects.exists()


def test_own_sync_id_cannot_take_a_peer_sync_id() -> None:
    peer_save(peer=peer(sync_id=4, store_code=StoreFactory().code))
    with pytest.raises(ValidationError, match="already used"):
        preferences_update(sync_id=4)


def test_master_with_satellites_cannot_become_a_satellite() -> None:
    peer_save(peer=peer(sync_id=4, store_code=StoreFactory().code))
    with pytest.raises(ValidationError, match="remove them"):
        preferences_update(sync_id=9)
    assert SyncPreferences.objects.get().sync_id == 1


@pytest.mark.parametrize("case", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_pulled_value_the_model_refuses_is_a_wire_error_naming_it(
    satellite: int, case: BadValue
) -> None:
    changeset, record_id = bad_push(StoreFactory(), case)
    with pytest.raises(WireError) as error:
        ChangeSet.from_wire(changeset.to_wire()).decode()
    assert str(error.value).startswith(f"{case.table} {record_id}: {case.field} ")


@pytest.mark.parametrize("case", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_pulled_changeset_with_a_refused_value_applies_nothing(
    satellite: int, case: BadValue
) -> None:
    changeset, _ = bad_push(StoreFactory(), case)
    before = synced_rows()
    with pytest.raises(WireError):
        changeset_apply(changeset=ChangeSet.from_wire(changeset.to_wire()), source_site=1)
    assert synced_rows() == before
    assert not BufferedRecord.objects.exists()


def test_a_pulled_changeset_with_valid_values_decodes_to_python_types(satellite: int) -> None:
    invoice, line = own_invoice(StoreFactory())
    decoded = ChangeSet.from_wire(changeset_of(invoice, line).to_wire()).decode()
    lines = TABLES_BY_NAME["stores_transactionline"]
    row = dict(zip(lines.field_names, decoded.rows(lines)[0], strict=True))
    assert row["quantity"] == line.quantity
    assert row["cost_price"] == line.cost_price
    assert row["expiry"] == line.expiry


def hex_ids(changeset: ChangeSet) -> ChangeSet:
    """`changeset` with its ids written as a satellite's encoder writes them: 32 hex digits."""
    spelt = ChangeSet(deletes=dict(changeset.deletes))
    for name, rows in changeset.upserts.items():
        table = TABLES_BY_NAME[name]
        ids = [
            i
            for i, f in enumerate(table.fields)
            if isinstance(f, UUIDField) or isinstance(getattr(f, "target_field", None), UUIDField)
        ]
        spelt.upserts[name] = [
            [uuid.UUID(v).hex if i in ids and isinstance(v, str) else v for i, v in enumerate(row)]
            for row in rows
        ]
    return spelt


def refusal(changeset: ChangeSet) -> str:
    with pytest.raises(WireError) as error:
        ChangeSet.from_wire(changeset.to_wire()).decode()
    return str(error.value)


@pytest.mark.parametrize("case", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_refused_value_among_canonical_ids_gets_the_same_message(
    satellite: int, case: BadValue
) -> None:
    # Canonical ids take the column-at-a-time check; the others the row-by-row decode.
    changeset, record_id = bad_push(StoreFactory(), case)
    canonical, decoded = refusal(hex_ids(changeset)), refusal(changeset)
    assert canonical.startswith(f"{case.table} "), canonical
    assert canonical.replace(record_id.hex, str(record_id)) == decoded


def test_values_written_canonically_are_checked_and_left_as_sent(satellite: int) -> None:
    invoice, line = own_invoice(StoreFactory())
    line.cost_price, line.sell_price = Decimal("9999999999.99"), Decimal("-0.01")
    sent = hex_ids(changeset_of(invoice, line)).to_wire()
    expected = json.loads(json.dumps(sent))
    checked = ChangeSet.from_wire(sent).decode()
    assert checked.to_wire() == expected
    lines = TABLES_BY_NAME["stores_transactionline"]
    assert checked.ids(lines) == {line.pk}
    assert checked.rows(lines)[0][lines.position("cost_price")] == Decimal("9999999999.99")


def test_values_spelt_otherwise_are_checked_and_written_canonically(satellite: int) -> None:
    invoice, line = own_invoice(StoreFactory())
    changeset = changeset_of(invoice, line)
    lines = TABLES_BY_NAME["stores_transactionline"]
    row = changeset.upserts[lines.name][0]
    row[lines.position("item_id")] = "{" + str(line.item_id).upper() + "}"
    row[lines.position("cost_price")] = "1E+2"
    row[lines.position("expiry")] = f"{line.expiry.year}-{line.expiry.month}-{line.expiry.day}"
    checked = ChangeSet.from_wire(changeset.to_wire()).decode()
    row = checked.upserts[lines.name][0]
    assert row[0] == line.pk.hex
    assert row[lines.position("item_id")] == line.item_id.hex
    assert Decimal(row[lines.position("cost_price")]) == 100
    assert row[lines.position("expiry")] == line.expiry.isoformat()
