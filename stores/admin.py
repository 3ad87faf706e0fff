"""Admin pages for master data (read-only on satellites), transactions and stock."""

import copy
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.contrib.admin.models import LogEntry
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import model_ngettext
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy

from . import services
from .models import Item, Name, StockLine, Store, Transaction, TransactionLine

DELETE_SELECTED = gettext_lazy("Delete selected %(verbose_name_plural)s")


class MasterDataAdmin(admin.ModelAdmin):
    """Master data may be written only on the master; a satellite shows it read-only.

    Deleting a record that satellites may hold or history uses deactivates it, and says so.
    """

    actions = ["delete_selected"]

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

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        # Autocomplete offers records for new transactions and lines; an inactive one stays in
        # the lists and in history but is no longer offered.
        if request.path == reverse(f"{self.admin_site.name}:autocomplete"):
            queryset = queryset.filter(active=True)
        return queryset, may_have_duplicates

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        deleted, model_count, perms_needed, _protected = super().get_deleted_objects(objs, request)
        # A record that history protects is deactivated instead, so protection blocks nothing.
        return deleted, model_count, perms_needed, []

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[LogEntry]:
        # Django logs before deleting, but only the service knows whether a record is deleted
        # or deactivated: _delete logs what happened.
        return []

    def _delete(self, request: HttpRequest, record: Any) -> services.MasterRecordDeletion:
        logged = copy.copy(record)  # keeps the primary key that deleting clears
        outcome = services.master_record_delete(record=record)
        if outcome == services.MasterRecordDeletion.DELETED:
            # Django's delete view passes a list as well; the stubs ask for a queryset.
            super().log_deletions(request, [logged])  # type: ignore[arg-type]
        else:
            self.log_change(request, record, DEACTIVATED_LOG)
        return outcome

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self._delete(request, obj)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> Any:
        kept = self.model._default_manager.filter(pk=obj_id).exists()
        if IS_POPUP_VAR in request.POST or not kept:
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(request, deactivated_message(obj_display), messages.WARNING)
        opts = self.opts
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj_id])
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        deleted = 0
        for record in queryset:
            shown = str(record)  # before deactivating retires its code
            if self._delete(request, record) == services.MasterRecordDeletion.DELETED:
                deleted += 1
            else:
                self.message_user(request, deactivated_message(shown), messages.WARNING)
        if deleted:
            names = model_ngettext(self.opts, deleted)
            self.message_user(request, f"Deleted {deleted} {names}.", messages.SUCCESS)

    @admin.action(permissions=["delete"], description=DELETE_SELECTED)
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        """Django's confirmation page; once confirmed, messages that say what was kept."""
        # Django's own action would then report every selected record as deleted.
        if request.POST.get("post"):
            self.delete_queryset(request, queryset)
            return None
        return admin_actions.delete_selected(self, request, queryset)


DEACTIVATED_LOG = "Deactivated, not deleted: satellites may hold it or history uses it."


def deactivated_message(record: str) -> str:
    """What the admin says when a delete deactivated `record` instead."""
    return (
        f"{record} was deactivated, not deleted: satellites may hold it or transactions use it, "
        "so it stays in history and can no longer be chosen. Its code now ends in ~ and part "
        "of its id, so a new record may take the code."
    )


@admin.register(Store)
class StoreAdmin(MasterDataAdmin):
    list_display = ["code", "name", "active"]
    list_filter = ["active"]
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

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        if obj is None:
            # A new transaction is not offered a deactivated store; an existing one keeps its own.
            store_field: Any = form.base_fields["store"]
            store_field.queryset = Store.objects.filter(active=True)
        return form

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
