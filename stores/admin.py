"""Admin pages for master data (read-only on satellites), transactions and stock."""

import copy
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.contrib.admin.models import LogEntry
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import model_ngettext
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Model, QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.forms.formsets import DELETION_FIELD_NAME
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext, gettext_lazy
from import_export.admin import ExportMixin, ImportExportMixin
from import_export.results import Result

from msupply import identity

from . import resources, services
from .models import Item, Name, StockLine, Store, Transaction, TransactionLine
from .transfers import TransferLine, inbounds_waiting_here, is_outbound_transfer, transfer_lines

DELETE_SELECTED = gettext_lazy("Delete selected %(verbose_name_plural)s")


def last_change_text(by: str, at: datetime | None, source_site: int | None = None) -> str:
    """Who changed a record last and when, as the admin shows it."""
    if at is None:
        return "-"
    if by:
        who = by
    elif source_site:
        who = gettext("sync from server %(site)s") % {"site": source_site}
    else:
        who = gettext("no user")
    when = formats.date_format(timezone.localtime(at), "DATETIME_FORMAT")
    return gettext("%(who)s, %(when)s") % {"who": who, "when": when}


def refusal(error: ValidationError | PermissionDenied) -> str:
    """A service's refusal as one message for the admin."""
    return " ".join(error.messages) if isinstance(error, ValidationError) else str(error)


class ServiceAdmin(admin.ModelAdmin):
    """Writes go through the services; a refusal that no form caught becomes an error message.

    Django runs the add, change and delete views in one database transaction, so a refused
    write leaves nothing behind: not the record, its lines or the history entry. Deletes are
    logged once the service has said what it did.
    """

    actions = ["delete_selected"]

    def record_delete(self, request: HttpRequest, record: Any) -> str | None:
        """Delete `record` through its service; a warning to show if the service kept it."""
        raise NotImplementedError

    def _deletion_log(self, request: HttpRequest, record: Any) -> None:
        # Django's delete view passes a list as well; the stubs ask for a queryset.
        super().log_deletions(request, [record])  # type: ignore[arg-type]

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[LogEntry]:
        # Django logs before deleting, but only the service knows whether a record is deleted:
        # record_delete logs what happened.
        return []

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as error:
            self.message_user(request, refusal(error), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as error:
            self.message_user(request, refusal(error), messages.ERROR)
            opts = self.opts
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id])
            )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self.record_delete(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        deleted = 0
        for record in queryset:
            try:
                warning = self.record_delete(request, record)
            except (ValidationError, services.StoreNotHostedHereError) as error:
                self.message_user(request, refusal(error), messages.ERROR)
            else:
                if warning:
                    self.message_user(request, warning, messages.WARNING)
                else:
                    deleted += 1
        if deleted:
            names = model_ngettext(self.opts, deleted)
            self.message_user(
                request,
                gettext("Deleted %(count)d %(names)s.") % {"count": deleted, "names": names},
                messages.SUCCESS,
            )

    @admin.action(permissions=["delete"], description=DELETE_SELECTED)
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        """Django's confirmation page; once confirmed, messages that say what was kept."""
        # Django's own action would then report every selected record as deleted.
        if request.POST.get("post"):
            self.delete_queryset(request, queryset)
            return None
        return admin_actions.delete_selected(self, request, queryset)


class MasterDataAdmin(ImportExportMixin, ServiceAdmin):
    """Master data may be written only on the master; a satellite shows it read-only.

    Deleting a record that satellites may hold or history uses deactivates it, and says so.
    Each record shows who changed it last, from its newest change-log row.
    Records are exported everywhere and imported on the master only (stores.resources): a
    preview first, row by row, then all rows or none, each in the History.
    """

    readonly_fields = ["last_changed"]

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def _import_refused(self, request: HttpRequest) -> HttpResponse | None:
        """On a satellite, the refusal every master-data write gets, back on the list."""
        try:
            services.master_data_ensure_writable()
        except services.MasterDataReadOnlyError as error:
            self.message_user(request, str(error), messages.ERROR)
            opts = self.opts
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            )
        return None

    def import_action(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        return self._import_refused(request) or super().import_action(request, **kwargs)

    def process_import(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        # The records and their History entries are written together, or neither.
        with transaction.atomic():
            return self._import_refused(request) or super().process_import(request, **kwargs)

    def get_import_data_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        # One refused row refuses the file: nothing is applied until every row is right.
        return {**super().get_import_data_kwargs(**kwargs), "rollback_on_validation_errors": True}

    def process_result(self, result: Result, request: HttpRequest) -> HttpResponse:
        if result.has_errors() or result.has_validation_errors():
            # The file changed between preview and confirmation, or the data did: the
            # library rolled the import back, so no History either.
            self.message_user(
                request,
                gettext(
                    "Nothing was imported: the file no longer passes its checks. Import it "
                    "again to see why."
                ),
                messages.ERROR,
            )
            opts = self.opts
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_import"))
        return super().process_result(result, request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return identity.records_with_last_change(super().get_queryset(request))

    @admin.display(description=gettext_lazy("Last changed by"), ordering="last_changed_at")
    def last_changed(self, record: Any) -> str:
        return last_change_text(
            getattr(record, "last_changed_by", ""),
            getattr(record, "last_changed_at", None),
            getattr(record, "last_change_source", None),
        )

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
        services.master_record_save(record=obj, by=request.user)

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

    def record_delete(self, request: HttpRequest, record: Any) -> str | None:
        logged = copy.copy(record)  # keeps the primary key that deleting clears
        shown = str(record)  # before deactivating retires its code
        deletion = services.master_record_delete(record=record, by=request.user)
        if deletion == services.MasterRecordDeletion.DELETED:
            self._deletion_log(request, logged)
            return None
        self.log_change(request, record, DEACTIVATED_LOG)
        return deactivated_message(shown)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> Any:
        kept = self.model._default_manager.filter(pk=obj_id).exists()
        if IS_POPUP_VAR in request.POST or not kept:
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(request, deactivated_message(obj_display), messages.WARNING)
        opts = self.opts
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj_id])
        )


DEACTIVATED_LOG = gettext_lazy(
    "Deactivated, not deleted: satellites may hold it or history uses it."
)


def deactivated_message(record: str) -> str:
    """What the admin says when a delete deactivated `record` instead."""
    return gettext(
        "%(record)s was deactivated, not deleted: satellites may hold it or transactions use "
        "it, so it stays in history and can no longer be chosen. Its code now ends in ~ and "
        "part of its id, so a new record may take the code."
    ) % {"record": record}


@admin.register(Store)
class StoreAdmin(MasterDataAdmin):
    resource_classes = [resources.StoreResource]
    list_display = ["code", "name", "active", "last_changed"]
    list_filter = ["active"]
    search_fields = ["code", "name"]


@admin.register(Item)
class ItemAdmin(MasterDataAdmin):
    resource_classes = [resources.ItemResource]
    list_display = ["code", "name", "unit", "active", "last_changed"]
    list_filter = ["active", "unit"]
    search_fields = ["code", "name"]


@admin.register(Name)
class NameAdmin(MasterDataAdmin):
    resource_classes = [resources.NameResource]
    list_display = ["code", "name", "kind", "active", "last_changed"]
    list_filter = ["kind", "active"]
    search_fields = ["code", "name"]


def lines_entered(formset: BaseInlineFormSet) -> list[services.LineInput]:
    """The lines of a validated inline formset as the service takes them, the deleted left out."""
    return [
        services.LineInput.of(form.instance)
        for form in formset.forms
        if not form.cleaned_data.get(DELETION_FIELD_NAME)
        and not (form.instance._state.adding and not form.has_changed())
    ]


class TransactionLineFormSet(BaseInlineFormSet):
    """Checks the lines by the service's rules, so that a refusal shows above them."""

    def clean(self) -> None:
        super().clean()
        kind = self.instance.kind
        if any(self.errors) or kind not in Transaction.Kind.values:
            return
        services.transaction_lines_validate(kind=kind, lines=lines_entered(self))


class TransactionLineInline(admin.TabularInline):
    model = TransactionLine
    formset = TransactionLineFormSet
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


class TransferFilter(admin.SimpleListFilter):
    """Transfers between stores: the incoming ones waiting here to be received, or every half."""

    title = gettext_lazy("transfers")
    parameter_name = "transfer"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("incoming", gettext("Incoming waiting to be received")),
            ("outbound", gettext("Outbound")),
            ("inbound", gettext("Inbound")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "incoming":
            return queryset.filter(pk__in=inbounds_waiting_here().values("pk"))
        if self.value() == "outbound":
            return queryset.filter(
                kind=Transaction.Kind.CUSTOMER_INVOICE, name__store__isnull=False
            )
        if self.value() == "inbound":
            return queryset.filter(transfer_of__isnull=False)
        return queryset


def _of(record: Transaction, store: Store) -> str:
    return gettext("%(record)s of %(store)s") % {"record": record, "store": store}


def _change_url(record: Transaction) -> str:
    return reverse("admin:stores_transaction_change", args=[record.pk])


def _transfer_lines_table(lines: list[TransferLine], received: str) -> SafeString:
    """Sent against received quantities, line by line."""
    return format_html(
        '<table class="transfer-lines"><thead><tr><th>{}</th><th>{}</th>'
        '<th class="num">{}</th><th class="num">{}</th></tr></thead><tbody>{}</tbody></table>',
        gettext("Item"),
        gettext("Batch"),
        gettext("Sent"),
        received,
        format_html_join(
            "",
            '<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td></tr>',
            (
                (line.item, line.batch, line.sent, "—" if line.received is None else line.received)
                for line in lines
            ),
        ),
    )


@admin.register(Transaction)
class TransactionAdmin(ExportMixin, ServiceAdmin):
    """Drafts are added, changed, deleted and finalised by the services; finalised are read-only.

    A transfer's two halves name each other: the list marks them, and each change page shows
    the other half's number and its quantities, sent against received.
    """

    resource_classes = [resources.TransactionResource]
    list_display = ["number", "store", "kind", "name", "date", "status", "transfer"]
    list_filter = [TransferFilter, "store", "kind", "status", "date"]
    search_fields = ["number", "name__name", "store__code"]
    date_hierarchy = "date"
    autocomplete_fields = ["name"]
    list_select_related = ["store", "name__store", "transfer_of__store", "inbound"]
    inlines = [TransactionLineInline]
    actions = ["finalise", "delete_selected"]

    class Media:
        css = {"all": ["stores/admin.css"]}

    @admin.display(description=gettext_lazy("Transfer"))
    def transfer(self, record: Transaction) -> str:
        """Outbound to, or inbound from, the other store; linked when this site holds the other
        half (an inbound's outbound always; an outbound's inbound once made or synced here)."""
        outbound = record.transfer_of
        if outbound is not None:
            return format_html(
                '<a class="transfer-badge transfer-inbound" href="{}" title="{}">{}</a>',
                _change_url(outbound),
                _of(outbound, outbound.store),
                gettext("Inbound from %(store)s") % {"store": outbound.store.code},
            )
        receiver = record.name.store if record.name is not None else None
        if record.kind != Transaction.Kind.CUSTOMER_INVOICE or receiver is None:
            return ""
        try:
            inbound: Transaction | None = record.inbound
        except Transaction.DoesNotExist:
            inbound = None
        if inbound is None:
            return format_html(
                '<span class="transfer-badge transfer-outbound" title="{}">{}</span>',
                str(receiver),
                gettext("Outbound to %(store)s") % {"store": receiver.code},
            )
        return format_html(
            '<a class="transfer-badge transfer-outbound" href="{}" title="{}">{}</a>',
            _change_url(inbound),
            _of(inbound, receiver),
            gettext("Outbound to %(store)s") % {"store": receiver.code},
        )

    @admin.display(description=gettext_lazy("Received"))
    def received(self, record: Transaction) -> str:
        """Where and when the receiving store received this outbound, line by line, or not yet."""
        if record.status == Transaction.Status.DRAFT:
            return gettext("Not sent yet: this outbound transfer is a draft.")
        receiver = record.name.store if record.name is not None else None
        inbound = Transaction.objects.filter(transfer_of=record).select_related("store").first()
        if inbound is None:
            return gettext("In transit: not yet received at %(store)s.") % {"store": receiver}
        if inbound.status != Transaction.Status.FINALISED or inbound.received_on is None:
            return format_html(
                gettext(
                    'Not yet received: <a href="{url}">{record}</a> waits in draft at {store}.'
                ),
                url=_change_url(inbound),
                record=str(inbound),
                store=str(inbound.store),
            )
        return format_html(
            gettext('<a href="{url}">Received at {store} on {date}</a>.{lines}'),
            url=_change_url(inbound),
            store=str(inbound.store),
            date=formats.date_format(inbound.received_on, "DATE_FORMAT"),
            lines=_transfer_lines_table(transfer_lines(record), gettext("Received")),
        )

    @admin.display(description=gettext_lazy("Sent"))
    def sent(self, record: Transaction) -> str:
        """The outbound this inbound receives: its number, store, date and sent quantities."""
        outbound = record.transfer_of
        if outbound is None:
            return ""
        finalised = record.status == Transaction.Status.FINALISED
        received = gettext("Received") if finalised else gettext("To receive")
        return format_html(
            gettext('<a href="{url}">{record} of {store}</a>, sent on {date}.{lines}'),
            url=_change_url(outbound),
            record=str(outbound),
            store=str(outbound.store),
            date=formats.date_format(outbound.date, "DATE_FORMAT"),
            lines=_transfer_lines_table(transfer_lines(outbound), received),
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_draft(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_draft(obj) and super().has_delete_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A draft stays in the store it was entered in: its number is that store's.
        if obj is None:
            return ["number", "status"]
        if obj.transfer_of_id is not None:
            return ["store", "number", "status", "transfer", "sent"]
        if is_outbound_transfer(obj):
            return ["store", "number", "status", "transfer", "received"]
        return ["store", "number", "status"]

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
        # The lines arrive in save_related, which writes the transaction and its lines at once.
        pass

    def save_related(
        self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool
    ) -> None:
        lines_formset = next(
            (formset for formset in formsets if isinstance(formset, TransactionLineFormSet)), None
        )
        lines = lines_entered(lines_formset) if lines_formset else None
        services.transaction_save(record=form.instance, lines=lines)
        if lines_formset:
            self._formset_outcome_record(lines_formset)

    @staticmethod
    def _formset_outcome_record(formset: BaseInlineFormSet) -> None:
        # Django's change message reads what formset.save() would have recorded.
        forms = [
            form
            for form in formset.forms
            if form.has_changed() or form.cleaned_data.get(DELETION_FIELD_NAME)
        ]
        deleted = [form for form in forms if form.cleaned_data.get(DELETION_FIELD_NAME)]
        formset.deleted_objects = [
            form.instance for form in deleted if not form.instance._state.adding
        ]
        formset.new_objects = [
            form.instance for form in forms if form.instance._state.adding and form not in deleted
        ]
        formset.changed_objects = [
            (form.instance, form.changed_data)
            for form in forms
            if not form.instance._state.adding and form not in deleted
        ]

    def record_delete(self, request: HttpRequest, record: Any) -> str | None:
        services.transaction_delete(record=record)
        self._deletion_log(request, record)
        return None

    @admin.action(description=gettext_lazy("Finalise selected transactions (moves stock)"))
    def finalise(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> None:
        finalised = 0
        for record in queryset.filter(status=Transaction.Status.DRAFT):
            try:
                services.transaction_finalise(record=record)
            except (ValidationError, services.StoreNotHostedHereError) as error:
                self.message_user(request, refusal(error), messages.ERROR)
            else:
                finalised += 1
        self.message_user(
            request,
            gettext("Finalised %(count)d transaction(s).") % {"count": finalised},
        )


@admin.register(StockLine)
class StockLineAdmin(ExportMixin, admin.ModelAdmin):
    """Stock moves only by finalising transactions, so it is shown, never edited here."""

    resource_classes = [resources.StockLineResource]
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
