"""Remove what this site no longer needs and say how much of each kind went."""

import json
from argparse import ArgumentParser
from typing import Any

from django.utils.translation import gettext as _

from msupply.commands import OperatorCommand
from sync.prune import sync_prune


class Command(OperatorCommand):
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
        self.say(
            _(
                "Removed %(changes)d change-log rows, %(sync_logs)d sync logs, %(exchanges)d "
                "exchange records, %(sync_requests)d Sync now requests, %(auth_failures)d failed "
                "logins and %(applied_batches)d applied batch ids."
            )
            % {
                "changes": report.changes,
                "sync_logs": report.sync_logs,
                "exchanges": report.exchanges,
                "sync_requests": report.sync_requests,
                "auth_failures": report.auth_failures,
                "applied_batches": report.applied_batches,
            }
        )
        if report.expired_satellites:
            satellites = ", ".join(str(sync_id) for sync_id in report.expired_satellites)
            self.say(
                _(
                    "Satellites silent past SYNC_PEER_RETENTION_DAYS, which must initialise again "
                    "(their next sync does so by itself): %(satellites)s."
                )
                % {"satellites": satellites}
            )
