"""factory_boy factories for every model the tests build."""

import datetime
import json
import uuid
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from stores.models import Item, Name, StockLine, Store, Transaction, TransactionLine
from sync.changes import ChangeSet
from sync.models import SyncPeer
from sync.registry import TABLES_BY_MODEL


class StoreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Store

    code = factory.Sequence(lambda n: f"S{n:03d}")
    name = factory.Sequence(lambda n: f"Health Centre {n}")


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item

    code = factory.Sequence(lambda n: f"I{n:05d}")
    name = factory.Sequence(lambda n: f"Amoxicillin 250 mg ({n})")
    unit = "capsule"


class NameFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Name

    code = factory.Sequence(lambda n: f"N{n:05d}")
    name = factory.Sequence(lambda n: f"Coastal Clinic {n}")
    kind = Name.Kind.CUSTOMER


class TransactionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Transaction

    store = factory.SubFactory(StoreFactory)
    kind = Transaction.Kind.SUPPLIER_INVOICE
    number = factory.Sequence(lambda n: n + 1)
    name = factory.SubFactory(NameFactory, kind=Name.Kind.SUPPLIER)
    date = factory.LazyFunction(lambda: datetime.date(2026, 11, 1))


class TransactionLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TransactionLine

    transaction = factory.SubFactory(TransactionFactory)
    item = factory.SubFactory(ItemFactory)
    batch = factory.Sequence(lambda n: f"B{n:04d}")
    expiry = datetime.date(2028, 6, 30)
    quantity = 100
    cost_price = Decimal("0.25")
    sell_price = Decimal("0.40")


class StockLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StockLine

    store = factory.SubFactory(StoreFactory)
    item = factory.SubFactory(ItemFactory)
    batch = factory.Sequence(lambda n: f"B{n:04d}")
    expiry = datetime.date(2028, 6, 30)
    quantity = 50


class SyncPeerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SyncPeer

    sync_id = factory.Sequence(lambda n: 2 + n % 63)
    name = factory.Sequence(lambda n: f"Satellite {n}")
    store_code = factory.LazyAttribute(lambda peer: StoreFactory().code)
    url = factory.Sequence(lambda n: f"http://127.0.0.1:{9000 + n}/")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("demo-password-1")
    is_staff = True

    @factory.post_generation
    def permissions(self, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        """Grant permissions given as "app_label.codename" strings."""
        for name in extracted or []:
            app_label, codename = name.split(".")
            self.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def changeset_of(*records: object, deleted: tuple[object, ...] = ()):
    """A wire ChangeSet upserting `records` (saved or not) and deleting `deleted`, in that order.

    Tables appear in the order their records are given, so a test can send children first.
    """
    changeset = ChangeSet()
    for record in records:
        table = TABLES_BY_MODEL[type(record)]
        row = [getattr(record, name) for name in table.field_names]
        changeset.upserts.setdefault(table.name, []).append(
            json.loads(json.dumps(row, cls=DjangoJSONEncoder))
        )
    for record in deleted:
        table = TABLES_BY_MODEL[type(record)]
        changeset.deletes.setdefault(table.name, []).append(record.pk)
    return changeset


class SyncLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "sync.SyncLog"

    peer_sync_id = 1
    started_at = factory.LazyFunction(timezone.now)
    result = "failure"
    error_code = "unreachable"
    message = "The master at http://127.0.0.1:9/ could not be reached."


class BufferedRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "sync.BufferedRecord"

    table_name = "stores_transactionline"
    record_id = factory.LazyFunction(uuid.uuid4)
    row = factory.LazyFunction(list)
    source_site = 2
    error = "waiting for transaction_id 00000000-0000-0000-0000-000000000000 to arrive"
    awaited_table = "stores_transaction"
    awaited_id = uuid.UUID(int=0)


class PeerStateFactory(factory.django.DjangoModelFactory):
    """What this site knows of a peer: on the master, a satellite's last contact and success."""

    class Meta:
        model = "sync.PeerState"

    peer = factory.SubFactory(SyncPeerFactory)


class SyncExchangeFactory(factory.django.DjangoModelFactory):
    """On the master: one request of a satellite to the sync API (by default a refused login)."""

    class Meta:
        model = "sync.SyncExchange"

    sync_id = 2
    endpoint = "handshake"
    result = "failure"
    error_code = "wrong_credentials"
    message = "The master refused the password."
    started_at = factory.LazyFunction(timezone.now)
