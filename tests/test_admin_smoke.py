"""Every admin list and change page loads; master data is read-only in a satellite's admin."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from stores.models import Item
from tests import factories

pytestmark = pytest.mark.django_db

FACTORIES = {
    "store": factories.StoreFactory,
    "item": factories.ItemFactory,
    "name": factories.NameFactory,
    "transaction": factories.TransactionFactory,
    "transactionline": factories.TransactionLineFactory,
    "stockline": factories.StockLineFactory,
    "syncpeer": factories.SyncPeerFactory,
    "synclog": factories.SyncLogFactory,
    "bufferedrecord": factories.BufferedRecordFactory,
}


@pytest.fixture
def superuser_client(client: Client, django_user_model) -> Client:
    client.force_login(
        django_user_model.objects.create_superuser("admin", "admin@example.org", "pw")
    )
    return client


@pytest.mark.parametrize(
    "model",
    [model for model in apps.get_models() if model in admin.site._registry],
    ids=lambda model: model._meta.label,
)
def test_admin_list_and_change_pages_load(superuser_client: Client, model) -> None:
    meta = model._meta
    factory = FACTORIES.get(meta.model_name)
    record = factory() if factory else model.objects.first()
    response = superuser_client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
    assert response.status_code == 200
    if record is not None:
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[record.pk])
        assert superuser_client.get(url).status_code == 200


@pytest.mark.parametrize("model_name", ["store", "item", "name"])
def test_master_data_is_read_only_in_a_satellite_admin(
    superuser_client: Client, satellite: int, model_name: str
) -> None:
    record = FACTORIES[model_name]()
    changelist = superuser_client.get(reverse(f"admin:stores_{model_name}_changelist"))
    assert changelist.status_code == 200
    assert reverse(f"admin:stores_{model_name}_add") not in changelist.content.decode()
    assert superuser_client.get(reverse(f"admin:stores_{model_name}_add")).status_code == 403
    change_url = reverse(f"admin:stores_{model_name}_change", args=[record.pk])
    page = superuser_client.get(change_url)
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    delete_url = reverse(f"admin:stores_{model_name}_delete", args=[record.pk])
    assert superuser_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert type(record).objects.filter(pk=record.pk).exists()


def test_satellite_admin_ignores_a_crafted_item_change(
    superuser_client: Client, satellite: int
) -> None:
    item = factories.ItemFactory(name="Zinc sulfate 20 mg")
    url = reverse("admin:stores_item_change", args=[item.pk])
    response = superuser_client.post(
        url, {"code": item.code, "name": "Forged", "unit": "tablet", "active": "on"}
    )
    assert response.status_code == 403
    assert Item.objects.get(pk=item.pk).name == "Zinc sulfate 20 mg"


def test_master_admin_adds_an_item(superuser_client: Client) -> None:
    response = superuser_client.post(
        reverse("admin:stores_item_add"),
        {"code": "ORS", "name": "Oral rehydration salts", "unit": "sachet", "active": "on"},
    )
    assert response.status_code == 302
    assert Item.objects.filter(code="ORS").exists()
