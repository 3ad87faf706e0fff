"""Show or set this site's synchronisation preferences from a provisioning script."""

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from msupply.commands import OperatorCommand
from sync import services
from sync.management.output import add_user_argument, command_user, validation_message
from sync.selectors import preferences_get


class Command(OperatorCommand):
    help = (
        "Print the synchronisation preferences (password masked), or set the ones given; each "
        "change goes into the admin History as done by --user (default: the inactive user "
        "manage.py). -v 0 prints nothing after a change."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--sync-id", type=int, help="1 for the master, 2-64 for a satellite.")
        parser.add_argument("--username", help="Sync user name, the same on every server.")
        parser.add_argument(
            "--password-stdin", action="store_true", help="Read the sync password from stdin."
        )
        parser.add_argument("--interval", type=int, help="Sync time interval in minutes; 0 pauses.")
        parser.add_argument(
            "--unlock-code-stdin",
            action="store_true",
            help="Read the authorisation code from stdin (after the password, one per line).",
        )
        parser.add_argument(
            "--key-stdin",
            action="store_true",
            help="On a satellite: read the key that the master's `sync_key issue` printed from "
            "stdin (after the password and code, one per line).",
        )
        add_user_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        secrets = self._read_secrets(
            {name: options[f"{name}_stdin"] for name in ("password", "unlock_code", "key")}
        )
        if options["interval"] is not None and options["interval"] < 0:
            raise CommandError(_("--interval must be 0 (paused) or a number of minutes."))
        changes = {
            "sync_id": options["sync_id"],
            "username": options["username"],
            "sync_interval_minutes": options["interval"],
            **secrets,
        }
        if any(value is not None for value in changes.values()):
            try:
                services.preferences_update(**changes, by=command_user(options))
            except ValidationError as error:
                raise CommandError(validation_message(error)) from error
            if self.verbosity >= 1:
                self._print(preferences_get())
            return
        self._print(preferences_get())

    def _read_secrets(self, flags: dict[str, bool]) -> dict[str, str]:
        wanted = [name for name, flag in flags.items() if flag]
        if not wanted:
            return {}
        lines = sys.stdin.read().splitlines()
        if len(lines) < len(wanted) or any(not line for line in lines[: len(wanted)]):
            raise CommandError(
                _("Expected %(names)s on standard input, one per line, not empty.")
                % {"names": " and ".join(wanted)}
            )
        return dict(zip(wanted, lines, strict=False))

    def _print(self, preferences: Any) -> None:
        role = _("master") if preferences.is_master else _("satellite")
        unset = _("(not set)")
        rows = [
            (_("Sync ID"), f"{preferences.sync_id} ({role})"),
            (_("User name"), preferences.username or unset),
            (_("Password"), "********" if preferences.password_hash else unset),
        ]
        if not preferences.is_master:
            rows.append(
                (_("Key"), _("held") if preferences.sync_key else _("(none: not enrolled)"))
            )
        interval = _("%(minutes)d minutes") % {"minutes": preferences.sync_interval_minutes}
        if preferences.sync_interval_minutes == 0:
            interval += " " + _("(paused)")
        rows.append((_("Sync time interval"), interval))
        rows.append((_("Authorisation code"), _("set") if preferences.unlock_code_hash else unset))
        width = max(len(label) for label, _value in rows) + 2
        for label, value in rows:
            self.stdout.write(f"{label + ':':<{width}}{value}")
