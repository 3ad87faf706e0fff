"""The admin tells whether a delete deleted or deactivated, and offers only active records."""

import datetime

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.test import Client
from django.urls import reverse

from stores import services
from stores.models import Item, Name, Store, Transaction
from sync.models import ChangeLog
from tests.factories import (
    ItemFactory,
    NameFactory,
    PeerStateFactory,
    StoreFactory,
    TransactionLineFactory,
)

pytestmark = pytest.mark.django_db

DATE = datetime.date(2026, 11, 1)


def deactivated(record: Item) -> str:
    """The message that tells the operator `record` was kept."""
    return (
        f"{record} was deactivated, not deleted: satellites may hold it or transactions use it, "
        "so it stays in history and can no longer be chosen. Its code now ends in ~ and part "
        "of its id, so a new record may take the code."
    )


@pytest.fixture
def admin_client(client: Client, django_user_model) -> Client:
    client.force_login(
        django_user_model.objects.create_superuser("admin", "admin@example.org", "pw")
    )
    return client


def held_by_a_satellite(record: Item) -> Item:
    """Record that a satellite was served a pull that may have carried `record`."""
    first = ChangeLog.objects.filter(record_id=record.pk).order_by("txid", "seq").first()
    assert first is not None
    PeerStateFactory(served_txid=first.txid, served_seq=first.seq)
    return record


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_deleting_an_item_a_satellite_may_hold_says_it_was_deactivated(
    admin_client: Client,
) -> None:
    item = held_by_a_satellite(ItemFactory(name="Zinc sulfate 20 mg"))
    url = reverse("admin:stores_item_delete", args=[item.pk])
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:stores_item_change", args=[item.pk])
    assert messages_of(response) == [deactivated(item)]
    assert Item.objects.get(pk=item.pk).active is False
    entry = LogEntry.objects.get(object_id=str(item.pk))
    assert entry.action_flag == CHANGE


def test_deleting_an_item_no_satellite_holds_deletes_it_and_logs_the_deletion(
    admin_client: Client,
) -> None:
    item = ItemFactory()
    url = reverse("admin:stores_item_delete", args=[item.pk])
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert any("was deleted successfully" in message for message in messages_of(response))
    assert not Item.objects.filter(pk=item.pk).exists()
    entry = LogEntry.objects.get(object_id=str(item.pk))
    assert (entry.action_flag, entry.object_repr) == (DELETION, str(item))


def test_an_item_history_uses_can_be_deleted_from_the_admin_and_is_deactivated(
    admin_client: Client,
) -> None:
    item = TransactionLineFactory().item
    url = reverse("admin:stores_item_delete", args=[item.pk])
    page = admin_client.get(url)
    assert b'name="post"' in page.content
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert messages_of(response) == [deactivated(item)]
    assert Item.objects.get(pk=item.pk).active is False


def test_bulk_delete_tells_which_records_were_deactivated_and_how_many_were_deleted(
    admin_client: Client,
) -> None:
    held = held_by_a_satellite(ItemFactory())
    used = TransactionLineFactory().item
    free = ItemFactory()
    response = admin_client.post(
        reverse("admin:stores_item_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [str(held.pk), str(used.pk), str(free.pk)],
            "post": "yes",
        },
        follow=True,
    )
    shown = messages_of(response)
    assert sorted(shown) == sorted([deactivated(held), deactivated(used), "Deleted 1 item."])
    assert not any("Successfully deleted" in message for message in shown)
    assert list(Item.objects.filter(active=False).order_by("code")) == sorted(
        [held, used], key=lambda item: item.code
    )
    assert not Item.objects.filter(pk=free.pk).exists()


def test_bulk_delete_first_asks_for_confirmation(admin_client: Client) -> None:
    item = TransactionLineFactory().item
    response = admin_client.post(
        reverse("admin:stores_item_changelist"),
        {"action": "delete_selected", "_selected_action": [str(item.pk)]},
    )
    assert response.status_code == 200
    assert b'name="post"' in response.content
    assert Item.objects.get(pk=item.pk).active is True


def autocomplete(client: Client, model_name: str, field_name: str) -> list[str]:
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "stores", "model_name": model_name, "field_name": field_name, "term": ""},
    )
    assert response.status_code == 200
    return [result["text"] for result in response.json()["results"]]


def test_inactive_items_and_names_are_not_offered_for_new_lines_and_transactions(
    admin_client: Client,
) -> None:
    active_item, inactive_item = ItemFactory(), ItemFactory(active=False)
    active_name, inactive_name = NameFactory(), NameFactory(active=False)
    assert autocomplete(admin_client, "transactionline", "item") == [str(active_item)]
    assert autocomplete(admin_client, "transaction", "name") == [str(active_name)]
    items = admin_client.get(reverse("admin:stores_item_changelist")).content.decode()
    names = admin_client.get(reverse("admin:stores_name_changelist")).content.decode()
    assert inactive_item.code in items
    assert inactive_name.code in names
    assert Item.objects.filter(active=False).get() == inactive_item
    assert Name.objects.filter(active=False).get() == inactive_name


def test_a_new_transaction_is_not_offered_a_deactivated_store(admin_client: Client) -> None:
    open_store, closed = StoreFactory(), StoreFactory(active=False)
    form = admin_client.get(reverse("admin:stores_transaction_add")).content.decode()
    assert f'value="{open_store.pk}"' in form
    assert f'value="{closed.pk}"' not in form


def test_stores_can_be_filtered_by_active(admin_client: Client) -> None:
    StoreFactory(code="OPEN"), StoreFactory(code="SHUT", active=False)
    page = admin_client.get(reverse("admin:stores_store_changelist"), {"active__exact": "0"})
    assert "SHUT" in page.content.decode()
    assert "OPEN" not in page.content.decode()


def test_a_transaction_added_in_the_admin_takes_its_number_from_the_counter(
    admin_client: Client,
) -> None:
    store, item = StoreFactory(), ItemFactory()
    services.transaction_create(
        store=store,
        kind=Transaction.Kind.INVENTORY_ADJUSTMENT,
        date=DATE,
        lines=[services.LineInput(item=item, batch="B1", expiry=DATE, quantity=1)],
    ).delete()
    response = admin_client.post(
        reverse("admin:stores_transaction_add"),
        {
            "store": str(store.pk),
            "kind": Transaction.Kind.INVENTORY_ADJUSTMENT,
            "date": DATE.isoformat(),
            "lines-TOTAL_FORMS": "0",
            "lines-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    assert Transaction.objects.get(store=store).number == 2
    assert Store.objects.get(pk=store.pk).number_counter.last_number == 2
