"""Synced supply-chain records: master data written on the master, store data on its host."""

import uuid

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class SyncedModel(models.Model):
    """A record that travels between sites; its UUID is made where it is created."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)

    class Meta:
        abstract = True


class Store(SyncedModel):
    """A location that holds stock: a warehouse, a hospital pharmacy, a clinic."""

    code = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        permissions = [("view_reports", "Can view master-wide reports")]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Item(SyncedModel):
    """A medicine or supply, stocked in a unit such as tablet or vial."""

    code = models.CharField(max_length=30, unique=True)
    name = models.CharField(max_length=200)
    unit = models.CharField(max_length=30)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


# Module level, not nested in their models: a model's Meta cannot see its class body, and
# the CHECK constraints below need the values.
class NameKind(models.TextChoices):
    CUSTOMER = "customer", _("Customer")
    SUPPLIER = "supplier", _("Supplier")
    # The name a store trades under: a customer invoice to it is a transfer (stores.transfers).
    STORE = "store", _("Store")


class TransactionKind(models.TextChoices):
    SUPPLIER_INVOICE = "supplier_invoice", _("Supplier invoice (goods received)")
    CUSTOMER_INVOICE = "customer_invoice", _("Customer invoice (goods issued)")
    INVENTORY_ADJUSTMENT = "inventory_adjustment", _("Inventory adjustment")


class TransactionStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    FINALISED = "finalised", _("Finalised")


class Name(SyncedModel):
    """Another party of a transaction: a customer or a supplier."""

    Kind = NameKind

    code = models.CharField(max_length=30, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    active = models.BooleanField(default=True)
    # Set on a store's own name (kind "store"), made on the master with the store.
    store = models.OneToOneField(
        Store,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="trading_name",
        help_text=_("The store that trades under this name: invoices to it are transfers."),
    )

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=NameKind.values), name="name_kind_valid"),
            models.CheckConstraint(
                condition=Q(store__isnull=True) | Q(kind=NameKind.STORE), name="name_store_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Transaction(SyncedModel):
    """A movement of goods in or out of a store; finalising it moves the stock."""

    Kind = TransactionKind
    Status = TransactionStatus

    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="transactions")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    number = models.PositiveIntegerField()
    name = models.ForeignKey(
        Name, on_delete=models.PROTECT, related_name="transactions", null=True, blank=True
    )
    date = models.DateField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    # On an inbound transfer (a supplier invoice made from another store's customer invoice to
    # this store): that outbound. One to one: an outbound has at most one inbound, ever.
    transfer_of = models.OneToOneField(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="inbound",
        help_text=_("The outbound transfer this inbound transfer receives."),
    )
    # When an inbound transfer was received (finalised) at its store.
    received_on = models.DateField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["store", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["store", "number"], name="transaction_number_per_store"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=TransactionKind.values), name="transaction_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=TransactionStatus.values), name="transaction_status_valid"
            ),
        ]
        indexes = [models.Index(fields=["store", "date"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.number}"


class NumberCounter(models.Model):
    """The last transaction number this site gave a store; it only goes up and is never synced."""

    store = models.OneToOneField(
        Store, on_delete=models.CASCADE, primary_key=True, related_name="number_counter"
    )
    last_number = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.store}: last number {self.last_number}"


class TransactionLine(SyncedModel):
    """One item batch on a transaction; adjustments may be negative, invoices may not."""

    transaction = models.ForeignKey(Transaction, on_delete=models.CASCADE, related_name="lines")
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="transaction_lines")
    batch = models.CharField(max_length=50)
    expiry = models.DateField()
    quantity = models.IntegerField()
    cost_price = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    sell_price = models.DecimalField(max_digits=12, decimal_places=2, default=0)

    class Meta:
        ordering = ["transaction", "item"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(quantity=0), name="transaction_line_quantity_nonzero"
            ),
        ]
        indexes = [
            # The expiring stock report ranks the receipts of batches expiring soon; holding
            # every column it reads lets PostgreSQL answer from the index alone.
            models.Index(
                fields=["expiry", "batch", "item", "transaction", "cost_price"],
                name="transaction_line_receipt",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item} batch {self.batch} x {self.quantity}"


class StockLine(SyncedModel):
    """The quantity on hand of one item batch in one store."""

    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="stock_lines")
    item = models.ForeignKey(Item, on_delete=models.PROTECT, related_name="stock_lines")
    batch = models.CharField(max_length=50)
    expiry = models.DateField()
    quantity = models.IntegerField(default=0)

    class Meta:
        ordering = ["store", "item", "expiry"]
        constraints = [
            models.UniqueConstraint(
                fields=["store", "item", "batch", "expiry"], name="stock_line_per_batch"
            ),
            models.CheckConstraint(condition=Q(quantity__gte=0), name="stock_line_not_negative"),
        ]
        indexes = [models.Index(fields=["store", "expiry"])]

    def __str__(self) -> str:
        return f"{self.item} batch {self.batch} ({self.quantity})"
