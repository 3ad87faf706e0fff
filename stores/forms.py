"""Filter forms of the reports: each parses a query string into a selector's arguments."""

import datetime
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .models import Item, Store, Transaction
from .reports import Period, ReportScope, items_matching

# An item list longer than this is cut short; the item search narrows it.
ITEM_CHOICES_LIMIT = 300
# Bounds the rows of the transactions report: periods x stores x kinds.
MAX_PERIODS = 120


class ScopedFilterForm(forms.Form):
    """A store filter offering only the stores this site reports on."""

    store = forms.ModelChoiceField(
        queryset=Store.objects.none(),
        required=False,
        to_field_name="code",
        empty_label=_("All"),
        label=_("Store"),
    )

    def __init__(self, data: Any, *, scope: ReportScope) -> None:
        super().__init__(data)
        store_field: Any = self.fields["store"]
        store_field.queryset = scope.stores()
        if not scope.is_master:
            # A satellite's only choice is its own store, so the list offers nothing else.
            store_field.empty_label = None


class StockFilterForm(ScopedFilterForm):
    """Store, item and item search: the filters of stock on hand, shared by expiring stock."""

    item = forms.ModelChoiceField(
        queryset=Item.objects.all(),
        required=False,
        to_field_name="code",
        empty_label=_("All"),
        label=_("Item"),
    )
    q = forms.CharField(label=_("Item search"), required=False, max_length=100)
    page = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)

    def __init__(self, data: Any, *, scope: ReportScope) -> None:
        super().__init__(data, scope=scope)
        search = str(self.data.get("q", "")).strip()
        items = items_matching(search=search, limit=ITEM_CHOICES_LIMIT)
        chosen = Item.objects.filter(code=self.data.get("item") or None).exclude(
            pk__in=[item.pk for item in items]
        )
        item_field: Any = self.fields["item"]
        item_field.choices = [
            ("", gettext("All")),
            *((item.code, f"{item.code} {item.name}") for item in [*chosen, *items]),
        ]
        if len(items) == ITEM_CHOICES_LIMIT:
            item_field.help_text = gettext(
                "The first %(count)d items; type in Item search to narrow the list."
            ) % {"count": ITEM_CHOICES_LIMIT}

    def clean_q(self) -> str:
        return str(self.cleaned_data["q"]).strip()


class StockOnHandFilterForm(StockFilterForm):
    """Filters of stock on hand: the shared ones and whether to list stock-outs only."""

    stock_outs = forms.BooleanField(
        label=_("Only stock-outs"),
        required=False,
        help_text=_("Items a store has stocked and now holds none of."),
    )


class ExpiringStockFilterForm(StockFilterForm):
    """Filters of the expiring stock report: the look-ahead in days besides the shared ones."""

    days = forms.IntegerField(
        label=_("Expiring within (days)"), min_value=0, max_value=3650, initial=90
    )

    field_order = ["days", "store", "item", "q"]


TOO_LONG = {
    Period.DAY: _(
        "That range has more than %(count)d days: shorten it or group by a longer period."
    ),
    Period.WEEK: _(
        "That range has more than %(count)d weeks: shorten it or group by a longer period."
    ),
    Period.MONTH: _(
        "That range has more than %(count)d months: shorten it or group by a longer period."
    ),
}


class TransactionsFilterForm(ScopedFilterForm):
    """Filters of the transactions report; the range is bounded to keep the table readable."""

    date_from = forms.DateField(label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label=_("To"), widget=forms.DateInput(attrs={"type": "date"}))
    period = forms.ChoiceField(label=_("By"), choices=Period.choices, initial=Period.WEEK)
    kind = forms.ChoiceField(
        choices=[("", _("All")), *Transaction.Kind.choices], required=False, label=_("Kind")
    )
    page = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)

    field_order = ["date_from", "date_to", "period", "store", "kind"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        date_from, date_to = cleaned.get("date_from"), cleaned.get("date_to")
        period = cleaned.get("period")
        if date_from and date_to and period:
            if date_from > date_to:
                raise forms.ValidationError(gettext("The From date is after the To date."))
            span = (date_to - date_from).days + 1
            periods = {Period.DAY: span, Period.WEEK: span / 7, Period.MONTH: span / 30.4}[
                Period(period)
            ]
            if periods > MAX_PERIODS:
                raise forms.ValidationError(str(TOO_LONG[Period(period)]) % {"count": MAX_PERIODS})
        return cleaned


def transactions_defaults() -> dict[str, str]:
    """The last 90 days by week, ending today."""
    today = timezone.localdate()
    return {
        "date_from": (today - datetime.timedelta(days=89)).isoformat(),
        "date_to": today.isoformat(),
        "period": Period.WEEK,
    }


class TransitFilterForm(forms.Form):
    """The goods in transit filters: the sending and the receiving store, each any store, since a
    satellite's transfers come from and go to stores it does not host."""

    from_store = forms.ModelChoiceField(
        label=_("From store"),
        queryset=Store.objects.order_by("code"),
        required=False,
        to_field_name="code",
        empty_label=_("All"),
    )
    to_store = forms.ModelChoiceField(
        label=_("To store"),
        queryset=Store.objects.order_by("code"),
        required=False,
        to_field_name="code",
        empty_label=_("All"),
    )
