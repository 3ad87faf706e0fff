"""Show or set this site's synchronisation preferences from a provisioning script."""

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from sync import services
from sync.management.output import validation_message
from sync.selectors import preferences_get


class Command(BaseCommand):
    help = "Print the synchronisation preferences (password masked), or set the ones given."

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

    def handle(self, *args: Any, **options: Any) -> None:
        secrets = self._read_secrets(
            {name: options[f"{name}_stdin"] for name in ("password", "unlock_code", "key")}
        )
        if options["interval"] is not None and options["interval"] < 0:
            raise CommandError("--interval must be 0 (paused) or a number of minutes.")
        changes = {
            "sync_id": options["sync_id"],
            "username": options["username"],
            "sync_interval_minutes": options["interval"],
            **secrets,
        }
        if any(value is not None for value in changes.values()):
            try:
                services.preferences_update(**changes)
            except ValidationError as error:
                raise CommandError(validation_message(error)) from error
        self._print(preferences_get())

    def _read_secrets(self, flags: dict[str, bool]) -> dict[str, str]:
        wanted = [name for name, flag in flags.items() if flag]
        if not wanted:
            return {}
        lines = sys.stdin.read().splitlines()
        if len(lines) < len(wanted) or any(not line for line in lines[: len(wanted)]):
            raise CommandError(
                f"Expected {' and '.join(wanted)} on standard input, one per line, not empty."
            )
        return dict(zip(wanted, lines, strict=False))

    def _print(self, preferences: Any) -> None:
        role = "master" if preferences.is_master else "satellite"
        self.stdout.write(f"Sync ID:            {preferences.sync_id} ({role})")
        self.stdout.write(f"User name:          {preferences.username or '(not set)'}")
        self.stdout.write(
            f"Password:           {'********' if preferences.password_hash else '(not set)'}"
        )
        if not preferences.is_master:
            self.stdout.write(
                f"Key:                {'held' if preferences.sync_key else '(none: not enrolled)'}"
            )
        self.stdout.write(
            f"Sync time interval: {preferences.sync_interval_minutes} minutes"
            + (" (paused)" if preferences.sync_interval_minutes == 0 else "")
        )
        self.stdout.write(
            f"Authorisation code: {'set' if preferences.unlock_code_hash else '(not set)'}"
        )
