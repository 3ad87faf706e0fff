"""Import and export of master data (stores, items, names) and export of store data, by code.

Codes are the natural keys: a row updates the record with its code or adds one, so a file
exported here imports back cleanly and a re-import never duplicates. Internal ids never
appear. Every row is checked by the rules of the services (stores.services) before anything is
written; the rows are then written in bulk by `master_records_bulk_save`, which refuses on a
satellite and records the importing user in the change log, like every master-data write.
"""

import copy
from collections import defaultdict
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Model
from django.utils.translation import gettext, gettext_lazy
from import_export import fields, resources, widgets
from import_export.instance_loaders import CachedInstanceLoader

from . import services
from .models import Item, Name, StockLine, Store, Transaction

Row = dict[str, Any]


class TextWidget(widgets.CharWidget):
    """Text as a spreadsheet gives it, without the spaces around it."""

    def clean(self, value: Any, row: Row | None = None, **kwargs: Any) -> Any:
        return super().clean(value, row, **kwargs).strip()


class YesNoWidget(widgets.BooleanWidget):
    """1 or 0 (true/false, yes/no); anything else is refused, not read as "no"."""

    WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

    def clean(self, value: Any, row: Row | None = None, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            return value
        word = str(value if value is not None else "").strip().lower().removesuffix(".0")
        if word not in self.WORDS:
            raise ValueError(
                gettext("%(value)s is not 1 or 0: give 1 (yes) or 0 (no).") % {"value": value}
            )
        return self.WORDS[word]


class MasterDataResource(resources.ModelResource):
    """Rows keyed by code, checked by the services' rules, written in bulk in one transaction.

    The library runs each row through `import_row`; here each new or changed record is
    validated (`services.master_record_validate`), while uniqueness of codes within the file
    is checked once for the whole file (codes already on this server are the records a row
    updates, so they cannot clash). Nothing is written per row: the library's bulk mode
    collects the records, and `bulk_create`/`bulk_update` below hand them to the service.
    """

    user: Any = None

    class Meta:
        abstract = True
        import_id_fields = ["code"]
        instance_loader_class = CachedInstanceLoader
        use_bulk = True
        batch_size = 5000
        use_transactions = True
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = True

    @classmethod
    def widget_from_django_field(cls, f: Any, default: Any = widgets.Widget) -> Any:
        if f.get_internal_type() == "CharField" and not f.choices:
            return TextWidget
        if f.get_internal_type() == "BooleanField":
            return YesNoWidget
        return super().widget_from_django_field(f, default)

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        self.user = kwargs.get("user")
        if not kwargs.get("dry_run"):
            # Once confirmed nobody reads the rows' HTML differences: a second of 20,000 rows.
            meta: Any = copy.copy(getattr(self, "_meta"))  # noqa: B009 - set by a metaclass
            meta.skip_html_diff = True
            self._meta = meta
        self.row_errors: dict[int, dict[str, list[str]]] = defaultdict(dict)
        code = self.fields["code"]
        rows_of: dict[str, list[int]] = defaultdict(list)
        if code.column_name in (dataset.headers or []):
            for number, values in enumerate(dataset.dict, start=1):
                value = code.clean(values)
                if value:
                    rows_of[value].append(number)
        for value, numbers in rows_of.items():
            for number in numbers[1:] if len(numbers) > 1 else []:
                self.row_errors[number]["code"] = [
                    gettext(
                        "Code %(code)s is on row %(first)s already: each code may appear "
                        "once in a file."
                    )
                    % {"code": value, "first": numbers[0]}
                ]

    def import_instance(self, instance: Any, row: Row, **kwargs: Any) -> None:
        errors = dict(self.row_errors.get(kwargs["row_number"], {}))
        try:
            super().import_instance(instance, row, **kwargs)
        except ValidationError as error:
            errors.update(error.message_dict)
        errors.update(self.row_rules_check(instance))
        if errors:
            raise ValidationError(errors)

    def row_rules_check(self, instance: Any) -> dict[str, list[str]]:
        """Rules of this kind of record beyond the model's; field name to messages."""
        return {}

    def validate_instance(
        self,
        instance: Any,
        import_validation_errors: dict[str, Any] | None = None,
        validate_unique: bool = True,
    ) -> None:
        errors = dict(import_validation_errors or {})
        try:
            services.master_record_validate(record=instance, unique=False)
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                errors.setdefault(field, messages)
        if errors:
            raise ValidationError(errors)

    def bulk_create(
        self,
        using_transactions: bool,
        dry_run: bool,
        raise_errors: bool,
        batch_size: int | None = None,
        result: Any = None,
    ) -> None:
        self._bulk_save(created=self.create_instances, changed=[], result=result)

    def bulk_update(
        self,
        using_transactions: bool,
        dry_run: bool,
        raise_errors: bool,
        batch_size: int | None = None,
        result: Any = None,
    ) -> None:
        self._bulk_save(created=[], changed=self.update_instances, result=result)

    def _bulk_save(self, *, created: list[Model], changed: list[Model], result: Any) -> None:
        # A dry run writes too, inside the transaction the library rolls back: the preview then
        # meets every database rule the real import meets.
        if not (created or changed):
            return
        try:
            services.master_records_bulk_save(
                model=self._meta.model,
                created=created,
                changed=changed,
                fields=self.get_bulk_update_fields(),
                by=self.user,
            )
        except Exception as error:  # noqa: BLE001 - shown on the preview, and nothing applied
            self.handle_import_error(result, error, raise_errors=False)
        finally:
            created.clear()
            changed.clear()


class StoreResource(MasterDataResource):
    """Stores by code; a new store gets the name it trades under, as in the admin."""

    class Meta(MasterDataResource.Meta):
        model = Store
        fields = ["code", "name", "active"]
        name = gettext_lazy("Stores by code")


class ItemResource(MasterDataResource):
    """Items by code, with a unit that is standard or already in use here."""

    class Meta(MasterDataResource.Meta):
        model = Item
        fields = ["code", "name", "unit", "active"]
        name = gettext_lazy("Items by code")

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        super().before_import(dataset, **kwargs)
        self.units = services.item_units_known()

    def row_rules_check(self, instance: Any) -> dict[str, list[str]]:
        if instance.unit and instance.unit not in self.units:
            return {
                "unit": [
                    gettext(
                        "Unknown unit %(unit)s: use a unit items here already have, or add "
                        "one item with this unit in the admin first."
                    )
                    % {"unit": instance.unit}
                ]
            }
        return {}


class NameResource(MasterDataResource):
    """Customers and suppliers by code; a store's own name is shown with its store's code and
    changes with its store, so a row of kind "store" may only be such a name."""

    store = fields.Field(
        attribute="store",
        column_name="store",
        widget=widgets.ForeignKeyWidget(Store, field="code"),
        readonly=True,
    )

    class Meta(MasterDataResource.Meta):
        model = Name
        fields = ["code", "name", "kind", "active", "store"]
        name = gettext_lazy("Names by code")

    def row_rules_check(self, instance: Any) -> dict[str, list[str]]:
        if instance.kind == Name.Kind.STORE and instance.store_id is None:
            return {
                "kind": [
                    gettext(
                        "Kind store is for the name a store trades under, which is made with "
                        "its store: import the store instead, or give a kind customer or "
                        "supplier."
                    )
                ]
            }
        return {}


class TransactionResource(resources.ModelResource):
    """Transactions as the admin lists them, with the codes of their store and other party."""

    store = fields.Field(attribute="store__code", column_name="store")
    name = fields.Field(attribute="name__code", column_name="name")

    class Meta:
        model = Transaction
        fields = ["store", "number", "kind", "name", "date", "status"]
        name = gettext_lazy("Transactions")


class StockLineResource(resources.ModelResource):
    """Stock on hand per store, item, batch and expiry, by codes."""

    store = fields.Field(attribute="store__code", column_name="store")
    item = fields.Field(attribute="item__code", column_name="item")

    class Meta:
        model = StockLine
        fields = ["store", "item", "batch", "expiry", "quantity"]
        name = gettext_lazy("Stock lines")
