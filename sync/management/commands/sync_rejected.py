"""On the master: the records satellites pushed that it set aside; retry or discard them."""

import json
import uuid
from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from msupply.commands import OperatorCommand
from sync import rejects
from sync.errors import SyncError
from sync.models import RejectedRecord
from sync.selectors import preferences_get


class Command(OperatorCommand):
    help = (
        "Records the master set aside: list [--sync-id N] [--json]; retry [--sync-id N] --user "
        "ADMIN; discard --id ID [--id ID ...] --note TEXT --user ADMIN (records waiting for a "
        "discarded one go with it). Retry and discard are written to the satellite's history."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["list", "retry", "discard"])
        parser.add_argument("--sync-id", type=int, help="Only this satellite's records.")
        parser.add_argument(
            "--id", action="append", default=[], help="A record's id (as listed); repeatable."
        )
        parser.add_argument("--note", default="", help="Why the records are discarded.")
        parser.add_argument("--user", help="User name of the administrator doing this.")
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not preferences_get().is_master:
            raise CommandError(_("Only the master sets records aside: run this on the master."))
        held = RejectedRecord.objects.order_by("sync_id", "received_at")
        if options["sync_id"] is not None:
            held = held.filter(sync_id=options["sync_id"])
        try:
            if options["action"] == "retry":
                self._retry(held, self._user(options), options["json"])
            elif options["action"] == "discard":
                self._discard(held, self._user(options), options)
            else:
                self._list(held, options["json"])
        except PermissionDenied as error:
            raise CommandError(str(error)) from error
        except SyncError as error:
            raise CommandError(error.message) from error

    def _user(self, options: dict[str, Any]) -> AbstractUser:
        if not options["user"]:
            raise CommandError(_("%(action)s needs --user.") % {"action": options["action"]})
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(
                _("No user %(name)r exists on this server.") % {"name": options["user"]}
            )
        return user

    def _list(self, held: Any, as_json: bool) -> None:
        records = list(held)
        if as_json:
            self.stdout.write(
                json.dumps(
                    [
                        {
                            "id": str(record.record_id),
                            "sync_id": record.sync_id,
                            "table": record.table_name,
                            "status": record.status,
                            "reason": record.reason,
                            "attempts": record.attempts,
                            "received_at": record.received_at.isoformat(),
                            "fields": record.fields,
                        }
                        for record in records
                    ]
                )
            )
            return
        if not records:
            self.say(_("No records are set aside."))
        for record in records:
            self.stdout.write(
                f"{record.sync_id}\t{record.table_name}\t{record.record_id}\t"
                f"{record.get_status_display()}\t{record.reason}"
            )

    def _retry(self, held: Any, user: AbstractUser, as_json: bool) -> None:
        sync_ids = set(held.values_list("sync_id", flat=True))
        outcomes = rejects.rejected_retry_by(sync_ids=sync_ids, user=user)
        applied = sum(outcome.applied for outcome in outcomes.values())
        still = sum(outcome.still_aside for outcome in outcomes.values())
        if as_json:
            self.stdout.write(json.dumps({"applied": applied, "still_aside": still}))
            return
        self.say(
            _("%(applied)d records applied, %(still)d still set aside.")
            % {"applied": applied, "still": still}
        )

    def _discard(self, held: Any, user: AbstractUser, options: dict[str, Any]) -> None:
        if not options["id"]:
            raise CommandError(_("discard needs --id for each record to discard."))
        try:
            wanted = {str(uuid.UUID(value)) for value in options["id"]}
        except ValueError:
            raise CommandError(_("--id takes a record id as listed (a UUID).")) from None
        chosen = list(held.filter(record_id__in=wanted))
        missing = wanted - {str(record.record_id) for record in chosen}
        if missing:
            raise CommandError(
                _("No set-aside record has id %(ids)s.") % {"ids": ", ".join(sorted(missing))}
            )
        try:
            count = rejects.rejected_discard(records=chosen, user=user, note=options["note"])
        except ValueError as error:
            raise CommandError(str(error)) from error
        if options["json"]:
            self.stdout.write(json.dumps({"discarded": count}))
            return
        self.say(_("Discarded %(count)d records, with the note.") % {"count": count})
