"""Remove what this site no longer needs and say how much of each kind went."""

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from sync.prune import sync_prune


class Command(BaseCommand):
    help = (
        "Compact the change log and remove old sync logs, failed logins and applied batch ids "
        "(see the SYNC_*_RETENTION_DAYS settings)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = sync_prune()
        if options["json"]:
            self.stdout.write(json.dumps(report.to_dict()))
            return
        self.stdout.write(
            f"Removed {report.changes} change-log rows, {report.sync_logs} sync logs, "
            f"{report.exchanges} exchange records, {report.sync_requests} Sync now requests, "
            f"{report.auth_failures} failed logins and {report.applied_batches} applied batch ids."
        )
        if report.expired_satellites:
            satellites = ", ".join(str(sync_id) for sync_id in report.expired_satellites)
            self.stdout.write(
                f"Satellites silent past SYNC_PEER_RETENTION_DAYS, which must initialise again "
                f"(their next sync does so by itself): {satellites}."
            )
