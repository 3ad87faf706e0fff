"""Who changed what: the change log records the user behind admin and service changes of master
data, the Sync with list notes its own, both show "last changed by", and the wire carries no user.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from msupply.acting_user import changes_by
from stores import services
from stores.models import Item, Store
from sync import keys
from sync.admin import UNLOCK_SESSION_KEY
from sync.integration import changeset_apply
from sync.models import ChangeLog, SyncPeer
from sync.prune import sync_prune
from sync.selectors import records_with_last_change
from sync.services import peer_save, preferences_update
from tests.factories import ItemFactory, PeerStateFactory, StoreFactory, UserFactory, changeset_of
from tests.sync.test_protocol import PULL, credentials, enrol

pytestmark = pytest.mark.django_db

ITEM_FIELDS = {"code": "AMX250", "name": "Amoxicillin 250mg", "unit": "capsule", "active": "on"}


@pytest.fixture
def keeper(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_superuser("keeper", "keeper@example.org", "pw")


@pytest.fixture
def keeper_client(client: Client, keeper: User) -> Client:
    client.force_login(keeper)
    return client


def newest_change(record: Model) -> ChangeLog:
    change = ChangeLog.objects.filter(record_id=record.pk).order_by("-txid", "-seq").first()
    assert change is not None
    return change


def last_changed_field(page: str) -> str:
    """The text of the read-only "Last changed by" field of an admin change form."""
    start = page.index('<div class="readonly">', page.index("Last changed by"))
    return page[start + len('<div class="readonly">') : page.index("</div>", start)]


def test_admin_change_of_an_item_records_the_user_and_the_form_shows_it(
    keeper_client: Client,
) -> None:
    item = ItemFactory()
    assert newest_change(item).changed_by == ""
    change_url = reverse("admin:stores_item_change", args=[item.pk])
    assert last_changed_field(keeper_client.get(change_url).content.decode()).startswith(
        "no user, "
    )

    response = keeper_client.post(change_url, {**ITEM_FIELDS, "code": item.code})

    assert response.status_code == 302
    change = newest_change(item)
    assert (change.action, change.changed_by) == ("upsert", "keeper")
    assert change.changed_at is not None
    assert timezone.now() - change.changed_at < timedelta(minutes=5)
    assert last_changed_field(keeper_client.get(change_url).content.decode()).startswith("keeper, ")
    changelist = keeper_client.get(reverse("admin:stores_item_changelist")).content.decode()
    assert "Last changed by" in changelist
    assert "keeper, " in changelist


def test_admin_add_and_deactivating_delete_of_a_store_record_the_user(
    keeper_client: Client,
) -> None:
    response = keeper_client.post(
        reverse("admin:stores_store_add"), {"code": "S100", "name": "Clinic", "active": "on"}
    )
    assert response.status_code == 302
    store = Store.objects.get(code="S100")
    assert newest_change(store).changed_by == "keeper"
    # A satellite was served the store, so deleting it deactivates it (a nested service call
    # without a user, which must keep the admin's).
    PeerStateFactory(served_txid=newest_change(store).txid, served_seq=newest_change(store).seq)
    keeper_client.post(reverse("admin:stores_store_delete", args=[store.pk]), {"post": "yes"})
    store.refresh_from_db()
    assert store.active is False
    assert newest_change(store).changed_by == "keeper"


def test_a_service_change_records_its_user_and_one_without_a_user_records_none() -> None:
    clerk = UserFactory(username="clerk")
    item = services.item_create(code="PCM500", name="Paracetamol", unit="tablet", by=clerk)
    assert newest_change(item).changed_by == "clerk"

    services.master_record_save(record=item, name="Paracetamol 500mg")

    assert newest_change(item).changed_by == ""
    assert ChangeLog.objects.filter(record_id=item.pk, changed_by="clerk").count() == 1
    shown = records_with_last_change(Item.objects.filter(pk=item.pk)).get()
    assert (shown.last_changed_by, shown.last_change_source) == ("", None)


def test_the_acting_user_ends_with_its_block_inside_the_same_transaction() -> None:
    # On PostgreSQL the setting lives as long as the transaction: the block must clear it.
    with changes_by(UserFactory(username="clerk")):
        inside = ItemFactory()
    after = ItemFactory()
    assert (newest_change(inside).changed_by, newest_change(after).changed_by) == ("clerk", "")


# On PostgreSQL pruning and pulls read below the horizon, which a running transaction holds:
# these tests commit their writes.
@pytest.mark.django_db(transaction=True)
def test_pruning_keeps_the_newest_change_and_so_who_made_it() -> None:
    item = services.item_create(code="ORS1", name="ORS", unit="sachet", by=UserFactory())
    services.master_record_save(record=item, by=UserFactory(username="second"), name="ORS salts")
    assert ChangeLog.objects.filter(record_id=item.pk).count() == 2

    sync_prune()

    assert list(ChangeLog.objects.filter(record_id=item.pk).values_list("changed_by")) == [
        ("second",)
    ]
    shown = records_with_last_change(Item.objects.filter(pk=item.pk)).get()
    assert shown.last_changed_by == "second"


@pytest.mark.django_db(transaction=True)
def test_the_pull_carries_the_items_row_and_not_who_changed_it(keeper_client: Client) -> None:
    preferences_update(sync_id=1, username="sync", password="pw")
    peer_save(
        peer=SyncPeer(
            sync_id=2, name="A", store_code=StoreFactory().code, url="http://127.0.0.1:9/"
        )
    )
    item = ItemFactory()
    keeper_client.post(
        reverse("admin:stores_item_change", args=[item.pk]), {**ITEM_FIELDS, "code": item.code}
    )
    assert newest_change(item).changed_by == "keeper"
    api = APIClient()
    api.credentials(**credentials(key=enrol()))

    page = api.get(PULL, {"cursor": "0.0", "limit": 1000}).json()

    (items,) = [upsert for upsert in page["changes"]["upserts"] if upsert["table"] == "stores_item"]
    assert items["fields"] == ["id", "code", "name", "unit", "active"]
    assert [item.pk.hex, item.code, ITEM_FIELDS["name"], "capsule", True] in [
        [uuid.UUID(row[0]).hex, *row[1:]] for row in items["rows"]
    ]
    assert "keeper" not in json.dumps(page)


def test_an_item_integrated_on_a_satellite_carries_no_user_and_shows_its_source(
    satellite: int, keeper_client: Client
) -> None:
    item = ItemFactory.build()

    changeset_apply(changeset=changeset_of(item), source_site=1)

    change = newest_change(item)
    assert (change.source_site, change.changed_by) == (1, "")
    page = keeper_client.get(reverse("admin:stores_item_change", args=[item.pk]))
    assert last_changed_field(page.content.decode()).startswith("sync from server 1, ")


def unlock(client: Client) -> None:
    session = client.session
    session[UNLOCK_SESSION_KEY] = (timezone.now() + timedelta(minutes=5)).isoformat()
    session.save()


def test_sync_with_changes_record_who_made_them_by_admin_key_service_and_command(
    keeper_client: Client, keeper: User
) -> None:
    store = StoreFactory()
    unlock(keeper_client)
    response = keeper_client.post(
        reverse("admin:sync_syncpeer_add"),
        {"sync_id": 3, "name": "Island", "store_code": store.code, "url": "http://127.0.0.1:9/"},
    )
    assert response.status_code == 302
    peer = SyncPeer.objects.get(sync_id=3)
    assert peer.changed_by == "keeper"
    assert peer.changed_at is not None
    form = keeper_client.get(reverse("admin:sync_syncpeer_change", args=[peer.pk]))
    # On each server's page; the list itself stays narrow enough for a laptop.
    assert last_changed_field(form.content.decode()).startswith("keeper, ")

    call_command("sync_peer", "update", "--sync-id", "3", "--name", "Island clinic")
    peer.refresh_from_db()
    assert (peer.name, peer.changed_by) == ("Island clinic", "")
    form = keeper_client.get(reverse("admin:sync_syncpeer_change", args=[peer.pk]))
    assert last_changed_field(form.content.decode()).startswith("no user, ")

    warden = UserFactory(username="warden", permissions=[keys.KEY_PERMISSION])
    keys.peer_enabled_set(sync_id=3, enabled=False, user=warden)
    peer.refresh_from_db()
    assert (peer.enabled, peer.changed_by) == (False, "warden")
