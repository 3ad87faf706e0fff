"""Admin pages for master data (read-only on satellites), transactions and stock."""

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from . import services
from .models import Item, Name, StockLine, Store, Transaction, TransactionLine


class MasterDataAdmin(admin.ModelAdmin):
    """Master data may be written only on the master; a satellite shows it read-only."""

    def _writable(self, request: HttpRequest) -> bool:
        try:
            services.master_data_ensure_writable()
        except services.MasterDataReadOnlyError:
            return False
        return True

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._writable(request) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._writable(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._writable(request) and super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        services.master_record_save(record=obj)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        services.master_record_delete(record=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for record in queryset:
            services.master_record_delete(record=record)


@admin.register(Store)
class StoreAdmin(MasterDataAdmin):
    list_display = ["code", "name"]
    search_fields = ["code", "name"]


@admin.register(Item)
class ItemAdmin(MasterDataAdmin):
    list_display = ["code", "name", "unit", "active"]
    list_filter = ["active", "unit"]
    search_fields = ["code", "name"]


@admin.register(Name)
class NameAdmin(MasterDataAdmin):
    list_display = ["code", "name", "kind", "active"]
    list_filter = ["kind", "active"]
    search_fields = ["code", "name"]


class TransactionLineInline(admin.TabularInline):
    model = TransactionLine
    extra = 1
    autocomplete_fields = ["item"]
    fields = ["item", "batch", "expiry", "quantity", "cost_price", "sell_price"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_draft(obj) and super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_draft(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_draft(obj) and super().has_delete_permission(request, obj)


def _is_draft(record: Transaction | None) -> bool:
    return record is None or record.status == Transaction.Status.DRAFT


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
    list_display = ["number", "store", "kind", "name", "date", "status"]
    list_filter = ["store", "kind", "status", "date"]
    search_fields = ["number", "name__name", "store__code"]
    date_hierarchy = "date"
    autocomplete_fields = ["name"]
    list_select_related = ["store", "name"]
    readonly_fields = ["number", "status"]
    inlines = [TransactionLineInline]
    actions = ["finalise"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_draft(obj) and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        services.store_data_ensure_writable(store=obj.store)
        if not change:
            obj.number = services.transaction_number_next(store=obj.store)
        super().save_model(request, obj, form, change)

    @admin.action(description="Finalise selected transactions (moves stock)")
    def finalise(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> None:
        finalised = 0
        for record in queryset.filter(status=Transaction.Status.DRAFT):
            try:
                services.transaction_finalise(record=record)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
            else:
                finalised += 1
        self.message_user(request, f"Finalised {finalised} transaction(s).")


@admin.register(StockLine)
class StockLineAdmin(admin.ModelAdmin):
    """Stock moves only by finalising transactions, so it is shown, never edited here."""

    list_display = ["item", "store", "batch", "expiry", "quantity"]
    list_filter = ["store", "expiry"]
    search_fields = ["item__name", "item__code", "batch"]
    list_select_related = ["item", "store"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
