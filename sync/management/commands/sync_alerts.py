"""Mail each satellite's change of alert state now and say what was sent."""

import json
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from sync.alerts import alerts_send
from sync.selectors import site_is_master


class Command(BaseCommand):
    help = (
        "On the master, e-mail SYNC_ALERT_EMAILS about each satellite that turned failing or "
        "stale, or is OK again, since the last alert (beat does this every 5 minutes)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON list.")

    def handle(self, *args: Any, **options: Any) -> None:
        alerts = alerts_send()
        if options["json"]:
            self.stdout.write(json.dumps([alert.to_dict() for alert in alerts]))
            return
        if not site_is_master():
            self.stdout.write("This server is a satellite: only the master sends sync alerts.")
            return
        if not settings.SYNC_ALERT_EMAILS:
            self.stdout.write("SYNC_ALERT_EMAILS is empty: set it to send sync alerts.")
            return
        for alert in alerts:
            change = f"{alert.sync_id} {alert.name} (store {alert.store}): {alert.previous} -> "
            if alert.error:
                self.stdout.write(f"Could not send {change}{alert.state}: {alert.error}")
            else:
                self.stdout.write(f"Sent {change}{alert.state} to {', '.join(alert.recipients)}")
        if not alerts:
            self.stdout.write("No alert to send.")
