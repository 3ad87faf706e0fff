"""The sync status report page, in the reports' look and with their CSV export."""

from collections import Counter

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.translation import gettext as _

from msupply.tables import Column, ReportTable, report_render, report_view
from stores.reports import report_scope

from .reports import STALENESS_LABELS, satellite_statuses


@report_view
def sync_status_report(request: HttpRequest) -> HttpResponseBase:
    """Each satellite's last contact, last successful sync and how long ago, and stale warnings."""
    scope = report_scope()
    statuses = satellite_statuses(scope=scope)
    table = ReportTable(
        [
            Column(_("Sync ID"), "number"),
            Column(_("Satellite")),
            Column(_("Store")),
            Column(_("Store name")),
            Column(_("Last contact"), "datetime"),
            Column(_("Last successful sync"), "datetime"),
            Column(_("How long ago")),
            Column(_("Status")),
            Column(_("Records received"), "number"),
            Column(_("Last error")),
            Column(_("Failure streak"), "number"),
            Column(_("Last failed"), "datetime"),
        ]
    )
    for status in statuses:
        table.add(
            [
                status.sync_id,
                status.name,
                status.store_code,
                status.store_name,
                status.last_contact_at,
                status.last_success_at,
                status.since_success(),
                status.staleness_label,
                status.records_received,
                status.last_error,
                status.failure_streak,
                status.last_failed_at,
            ],
            css=f"sync-{status.staleness}",
            classes={7: f"sync-badge sync-{status.staleness}", 9: "error-text"},
        )
    counts = Counter(status.staleness for status in statuses)
    return report_render(
        request,
        template="reports/sync_status.html",
        title=_("Sync status"),
        scope=scope,
        table=table,
        filename="sync-status.csv",
        stale=[status for status in statuses if status.staleness != "ok"],
        summary=[(STALENESS_LABELS[key], key, counts[key]) for key in STALENESS_LABELS],
    )
