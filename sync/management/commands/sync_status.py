"""Show this site's role, cursors, pending changes and recent runs."""

import json
from argparse import ArgumentParser
from datetime import datetime
from typing import Any

from django.utils import formats, timezone
from django.utils.translation import gettext as _

from msupply.commands import OperatorCommand
from sync.selectors import sync_status


def _when(value: datetime | None) -> str:
    if value is None:
        return _("never")
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


class Command(OperatorCommand):
    help = (
        "Show this site's sync role, cursors, pending outgoing changes and recent runs (the "
        "answer is printed at every verbosity)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        status = sync_status()
        if options["json"]:
            self.stdout.write(json.dumps(status, default=str))
            return
        write = self.stdout.write
        write(_("Sync ID %(sync_id)s (%(role)s)") % status)
        for peer in status["peers"]:
            line = _(
                "  %(sync_id)s %(name)s (store %(store)s): last contact %(contact)s, last "
                "success %(success)s, key: %(key)s"
            ) % {
                **peer,
                "contact": _when(peer["last_contact_at"]),
                "success": _when(peer["last_success_at"]),
            }
            if peer["last_error_code"]:
                line += (
                    _(
                        ", last error %(last_error_code)s (%(failure_streak)s failed in a row): "
                        "%(last_error)s"
                    )
                    % peer
                )
            write(line)
            if peer["log_expired_at"]:
                write(
                    _(
                        "  silent past SYNC_PEER_RETENTION_DAYS: must initialise again (marked "
                        "%(when)s; its next sync does so by itself)"
                    )
                    % {"when": _when(peer["log_expired_at"])}
                )
            if status["role"] == "satellite":
                write(
                    _(
                        "  push cursor %(push_cursor)s, pull cursor %(pull_cursor)s, "
                        "initialised: %(initialised)s"
                    )
                    % peer
                )
        if status["role"] == "satellite":
            write(_("Pending outgoing changes: %(count)s") % {"count": status["pending_changes"]})
            write(
                _("Records waiting for a parent: %(count)s") % {"count": status["buffered_records"]}
            )
        for run in status["recent_runs"]:
            write(
                _("  %(when)s %(result)s: pushed %(pushed)s, pulled %(pulled)s")
                % {
                    "when": _when(run["started_at"]),
                    "result": run["result"],
                    "pushed": run["records_pushed"],
                    "pulled": run["records_pulled"],
                }
                + (f" - {run['message']}" if run["message"] else "")
            )
