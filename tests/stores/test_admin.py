"""The admin tells whether a delete deleted or deactivated, and offers only active records."""

import datetime
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from stores import services
from stores.models import Item, Name, StockLine, Store, Transaction, TransactionLine
from sync.models import ChangeLog
from tests.factories import (
    ItemFactory,
    NameFactory,
    PeerStateFactory,
    StockLineFactory,
    StoreFactory,
    SyncPeerFactory,
    TransactionFactory,
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
            **lines_data(line(item, 4)),
        },
    )
    assert response.status_code == 302
    assert Transaction.objects.get(store=store).number == 2
    assert Store.objects.get(pk=store.pk).number_counter.last_number == 2


# --- transactions are written by the services ----------------------------------------------


def line(item: Item, quantity: int, batch: str = "B1", **extra: str) -> dict[str, str]:
    """One inline line form's fields; `id` names an existing line, `DELETE` deletes it."""
    return {
        "item": str(item.pk),
        "batch": batch,
        "expiry": DATE.isoformat(),
        "quantity": str(quantity),
        "cost_price": "0.25",
        "sell_price": "0.40",
        **extra,
    }


def lines_data(*lines: dict[str, str], initial: int = 0) -> dict[str, str]:
    """The inline formset's POST data for `lines`, the first `initial` of them existing."""
    data = {
        "lines-TOTAL_FORMS": str(len(lines)),
        "lines-INITIAL_FORMS": str(initial),
        "lines-MIN_NUM_FORMS": "0",
        "lines-MAX_NUM_FORMS": "1000",
    }
    for index, fields in enumerate(lines):
        data.update({f"lines-{index}-{name}": value for name, value in fields.items()})
    return data


def invoice_data(store: Store, *lines: dict[str, str], **header: Any) -> dict[str, str]:
    """A customer invoice's add form for `store` with `lines`."""
    return {
        "store": str(store.pk),
        "kind": Transaction.Kind.CUSTOMER_INVOICE,
        "name": str(NameFactory().pk),
        "date": DATE.isoformat(),
        **header,
        **lines_data(*lines),
    }


def draft_change_data(record: Transaction, *lines: dict[str, str], **header: str) -> dict[str, str]:
    """A draft's change form holding its stored lines first, then `lines`."""
    stored = [
        line(
            stored.item,
            stored.quantity,
            stored.batch,
            id=str(stored.pk),
            cost_price=str(stored.cost_price),
            sell_price=str(stored.sell_price),
        )
        for stored in record.lines.all()
    ]
    return {
        "kind": record.kind,
        "name": str(record.name_id),
        "date": record.date.isoformat(),
        **header,
        **lines_data(*stored, *lines, initial=len(stored)),
    }


def errors_shown(response) -> str:
    """The inline's non-form errors, where the service's refusal appears."""
    (formset,) = [inline.formset for inline in response.context["inline_admin_formsets"]]
    return " ".join(formset.non_form_errors())


def in_stock(store: Store, item: Item, quantity: int) -> None:
    StockLineFactory(store=store, item=item, batch="B1", expiry=DATE, quantity=quantity)


def test_a_customer_invoice_with_a_negative_line_is_refused_with_the_service_message(
    admin_client: Client,
) -> None:
    store, item = StoreFactory(), ItemFactory(code="AMX", name="Amoxicillin")
    in_stock(store, item, 10)

    response = admin_client.post(
        reverse("admin:stores_transaction_add"), invoice_data(store, line(item, -5))
    )

    assert response.status_code == 200
    assert errors_shown(response) == (
        "Invoice quantities must be positive: AMX Amoxicillin batch B1 has -5. "
        "Use an inventory adjustment to reduce stock."
    )
    assert not Transaction.objects.exists()
    assert not LogEntry.objects.exists()
    assert StockLine.objects.get().quantity == 10


def test_a_transaction_without_lines_is_refused(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:stores_transaction_add"), invoice_data(StoreFactory())
    )
    assert errors_shown(response) == "A transaction needs at least one line."
    assert not Transaction.objects.exists()


def test_a_customer_invoice_added_in_the_admin_is_a_numbered_draft_with_its_lines(
    admin_client: Client,
) -> None:
    store, item = StoreFactory(), ItemFactory()

    response = admin_client.post(
        reverse("admin:stores_transaction_add"),
        invoice_data(store, line(item, 5), line(item, 2, "B2"), line(item, 0, "", DELETE="on")),
    )

    assert response.status_code == 302
    record = Transaction.objects.get()
    assert (record.number, record.status) == (1, Transaction.Status.DRAFT)
    assert sorted(record.lines.values_list("batch", "quantity")) == [("B1", 5), ("B2", 2)]
    entry = LogEntry.objects.get()
    assert (entry.action_flag, entry.object_id) == (ADDITION, str(record.pk))
    assert entry.get_change_message().count("Added transaction line") == 2
    assert "Deleted" not in entry.get_change_message()
    assert not StockLine.objects.exists()


def test_changing_a_draft_keeps_changes_adds_and_deletes_its_lines(admin_client: Client) -> None:
    record = services.transaction_create(
        store=StoreFactory(),
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        name=NameFactory(kind=Name.Kind.SUPPLIER),
        date=DATE,
        lines=[
            services.LineInput(item=ItemFactory(), batch="KEEP", expiry=DATE, quantity=3),
            services.LineInput(item=ItemFactory(), batch="DROP", expiry=DATE, quantity=4),
        ],
    )
    kept, dropped = record.lines.get(batch="KEEP"), record.lines.get(batch="DROP")
    data = draft_change_data(record, line(ItemFactory(), 7, "NEW"), date="2026-11-20")
    data.update({"lines-0-quantity": "9", "lines-1-DELETE": "on"})
    assert data["lines-1-id"] == str(dropped.pk)

    response = admin_client.post(reverse("admin:stores_transaction_change", args=[record.pk]), data)

    assert response.status_code == 302
    stored = Transaction.objects.get(pk=record.pk)
    assert (stored.date, stored.number) == (datetime.date(2026, 11, 20), record.number)
    assert sorted(stored.lines.values_list("batch", "quantity")) == [("KEEP", 9), ("NEW", 7)]
    assert stored.lines.get(batch="KEEP").pk == kept.pk
    message = LogEntry.objects.get(action_flag=CHANGE).get_change_message()
    assert "Added transaction line" in message
    assert "Changed Quantity for transaction line “" in message
    assert "Deleted transaction line" in message


def test_a_draft_turned_into_a_customer_invoice_keeps_no_negative_line(
    admin_client: Client,
) -> None:
    record = services.transaction_create(
        store=StoreFactory(),
        kind=Transaction.Kind.INVENTORY_ADJUSTMENT,
        date=DATE,
        lines=[services.LineInput(item=ItemFactory(), batch="B1", expiry=DATE, quantity=-5)],
    )
    data = draft_change_data(record, kind=Transaction.Kind.CUSTOMER_INVOICE, name="")

    response = admin_client.post(reverse("admin:stores_transaction_change", args=[record.pk]), data)

    assert "must be positive" in errors_shown(response)
    assert Transaction.objects.get(pk=record.pk).kind == Transaction.Kind.INVENTORY_ADJUSTMENT


def test_a_refusal_no_form_foresaw_is_an_error_message_and_saves_nothing(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such as a draft another user finalised between the form's checks and its save."""

    def refuse(**kwargs: Any) -> None:
        raise ValidationError("Refused by the service.")

    monkeypatch.setattr(services, "transaction_save", refuse)
    url = reverse("admin:stores_transaction_add")

    response = admin_client.post(url, invoice_data(StoreFactory(), line(ItemFactory(), 1)))

    assert response.status_code == 302
    assert response["Location"] == url
    assert messages_of(admin_client.get(url)) == ["Refused by the service."]
    assert not Transaction.objects.exists()
    assert not LogEntry.objects.exists()


def test_finalising_a_draft_with_a_negative_invoice_line_is_refused_and_moves_no_stock(
    admin_client: Client,
) -> None:
    store, item = StoreFactory(), ItemFactory()
    in_stock(store, item, 10)
    record = TransactionFactory(store=store, kind=Transaction.Kind.CUSTOMER_INVOICE)
    TransactionLineFactory(transaction=record, item=item, batch="B1", expiry=DATE, quantity=-5)

    response = admin_client.post(
        reverse("admin:stores_transaction_changelist"),
        {"action": "finalise", "_selected_action": [str(record.pk)]},
        follow=True,
    )

    shown = messages_of(response)
    assert any("Invoice quantities must be positive" in message for message in shown)
    assert "Finalised 0 transaction(s)." in shown
    assert Transaction.objects.get(pk=record.pk).status == Transaction.Status.DRAFT
    assert StockLine.objects.get().quantity == 10


def finalised_invoice(store: Store, item: Item) -> Transaction:
    record = services.transaction_create(
        store=store,
        kind=Transaction.Kind.SUPPLIER_INVOICE,
        date=DATE,
        lines=[services.LineInput(item=item, batch="B1", expiry=DATE, quantity=6)],
    )
    return services.transaction_finalise(record=record)


def test_a_finalised_transaction_cannot_be_changed_or_deleted_in_the_admin(
    admin_client: Client,
) -> None:
    record = finalised_invoice(StoreFactory(), ItemFactory())
    change_url = reverse("admin:stores_transaction_change", args=[record.pk])

    page = admin_client.get(change_url)
    changed = admin_client.post(change_url, draft_change_data(record, date="2026-12-01"))
    deleted = admin_client.post(
        reverse("admin:stores_transaction_delete", args=[record.pk]), {"post": "yes"}
    )

    assert b'name="_save"' not in page.content
    assert (changed.status_code, deleted.status_code) == (403, 403)
    assert Transaction.objects.get(pk=record.pk).date == DATE
    assert StockLine.objects.get().quantity == 6


def test_deleting_a_draft_in_the_admin_deletes_it_and_its_lines(admin_client: Client) -> None:
    record = TransactionLineFactory().transaction

    response = admin_client.post(
        reverse("admin:stores_transaction_delete", args=[record.pk]), {"post": "yes"}, follow=True
    )

    assert any("was deleted successfully" in message for message in messages_of(response))
    assert not Transaction.objects.exists()
    assert not TransactionLine.objects.exists()
    entry = LogEntry.objects.get()
    assert (entry.action_flag, entry.object_id) == (DELETION, str(record.pk))


def test_bulk_delete_deletes_drafts_and_refuses_finalised_transactions(
    admin_client: Client,
) -> None:
    draft = TransactionLineFactory().transaction
    final = finalised_invoice(StoreFactory(), ItemFactory())

    response = admin_client.post(
        reverse("admin:stores_transaction_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [str(draft.pk), str(final.pk)],
            "post": "yes",
        },
        follow=True,
    )

    shown = messages_of(response)
    assert "Deleted 1 transaction." in shown
    assert any("finalised, so it can no longer be changed or deleted" in m for m in shown)
    assert list(Transaction.objects.all()) == [final]
    assert StockLine.objects.get().quantity == 6
    entry = LogEntry.objects.get()
    assert (entry.action_flag, entry.object_id) == (DELETION, str(draft.pk))


def test_deleting_a_store_a_satellite_hosts_is_refused_with_a_message(
    admin_client: Client,
) -> None:
    store = StoreFactory()
    SyncPeerFactory(store_code=store.code)
    url = reverse("admin:stores_store_delete", args=[store.pk])

    response = admin_client.post(url, {"post": "yes"}, follow=True)

    assert response.redirect_chain[-1][0] == reverse("admin:stores_store_change", args=[store.pk])
    assert any("remove that server from Sync with" in m for m in messages_of(response))
    assert Store.objects.get(pk=store.pk).active
    assert not LogEntry.objects.exists()


def test_bulk_delete_of_a_store_a_satellite_hosts_refuses_that_store_only(
    admin_client: Client,
) -> None:
    hosted, free = StoreFactory(), StoreFactory()
    SyncPeerFactory(store_code=hosted.code)

    response = admin_client.post(
        reverse("admin:stores_store_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [str(hosted.pk), str(free.pk)],
            "post": "yes",
        },
        follow=True,
    )

    shown = messages_of(response)
    assert "Deleted 1 store." in shown
    assert any("remove that server from Sync with" in m for m in shown)
    assert list(Store.objects.all()) == [hosted]
