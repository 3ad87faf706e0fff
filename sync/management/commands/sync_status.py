"""Show this site's role, cursors, pending changes and recent runs."""

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from sync.selectors import sync_status


class Command(BaseCommand):
    help = "Show this site's sync role, cursors, pending outgoing changes and recent runs."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        status = sync_status()
        if options["json"]:
            self.stdout.write(json.dumps(status, default=str))
            return
        self.stdout.write(f"Sync ID {status['sync_id']} ({status['role']})")
        for peer in status["peers"]:
            self.stdout.write(
                f"  {peer['sync_id']} {peer['name']} (store {peer['store']}): last contact "
                f"{peer['last_contact_at'] or 'never'}, last success "
                f"{peer['last_success_at'] or 'never'}, key: {peer['key']}"
                + (
                    f", last error {peer['last_error_code']} ({peer['failure_streak']} failed in "
                    f"a row): {peer['last_error']}"
                    if peer["last_error_code"]
                    else ""
                )
            )
            if peer["log_expired_at"]:
                self.stdout.write(
                    f"  silent past SYNC_PEER_RETENTION_DAYS: must initialise again (marked "
                    f"{peer['log_expired_at']}; its next sync does so by itself)"
                )
            if status["role"] == "satellite":
                self.stdout.write(
                    f"  push cursor {peer['push_cursor']}, pull cursor {peer['pull_cursor']}, "
                    f"initialised: {peer['initialised']}"
                )
        if status["role"] == "satellite":
            self.stdout.write(f"Pending outgoing changes: {status['pending_changes']}")
            self.stdout.write(f"Records waiting for a parent: {status['buffered_records']}")
        for run in status["recent_runs"]:
            self.stdout.write(
                f"  {run['started_at']:%Y-%m-%d %H:%M:%S} {run['result']}: pushed "
                f"{run['records_pushed']}, pulled {run['records_pulled']}"
                + (f" - {run['message']}" if run["message"] else "")
            )
