"""Mail each satellite's change of alert state now and say what was sent."""

import json
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from msupply.commands import OperatorCommand
from sync.alerts import alerts_send
from sync.selectors import site_is_master


class Command(OperatorCommand):
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
            self.say(_("This server is a satellite: only the master sends sync alerts."))
            return
        if not settings.SYNC_ALERT_EMAILS:
            self.say(_("SYNC_ALERT_EMAILS is empty: set it to send sync alerts."))
            return
        for alert in alerts:
            change = {
                "sync_id": alert.sync_id,
                "name": alert.name,
                "store": alert.store,
                "previous": alert.previous,
                "state": alert.state,
            }
            if alert.error:
                # A mail that could not go is a failure the operator must see even at -v 0.
                self.stderr.write(
                    _(
                        "Could not send %(sync_id)s %(name)s (store %(store)s): %(previous)s -> "
                        "%(state)s: %(error)s"
                    )
                    % {**change, "error": alert.error}
                )
            else:
                self.say(
                    _(
                        "Sent %(sync_id)s %(name)s (store %(store)s): %(previous)s -> %(state)s "
                        "to %(recipients)s"
                    )
                    % {**change, "recipients": ", ".join(alert.recipients)}
                )
        if not alerts:
            self.say(_("No alert to send."))
