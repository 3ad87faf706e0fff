"""List, add, change or remove servers in this site's Sync with list."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from msupply.commands import OperatorCommand
from sync import services
from sync.management.output import add_user_argument, command_user, validation_message
from sync.models import SyncPeer
from sync.selectors import peers_list


class Command(OperatorCommand):
    help = (
        "Manage the Sync with list: list; add --sync-id --name --store --url; update --sync-id "
        "with any of --name --store --url (keeps the sync state); remove --sync-id. Changes go "
        "into the admin History as done by --user (default: the inactive user manage.py); "
        "-v 0 prints nothing after a change."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["list", "add", "update", "remove"])
        parser.add_argument("--sync-id", type=int)
        parser.add_argument("--name")
        parser.add_argument("--store", help="Code of the store that the server hosts.")
        parser.add_argument("--url", help="Full URL of the server.")
        parser.add_argument(
            "--interval",
            type=int,
            help="On the master: the satellite's Sync time interval in minutes (alerts use it).",
        )
        add_user_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "add":
            self._add(options)
        elif action == "update":
            self._update(options)
        elif action == "remove":
            self._remove(options)
        if action == "list" or self.verbosity >= 1:
            for peer in peers_list():
                self.stdout.write(f"{peer.sync_id}\t{peer.name}\t{peer.store_code}\t{peer.url}")

    def _add(self, options: dict[str, Any]) -> None:
        missing = [
            f"--{flag}" for flag in ("sync_id", "name", "store", "url") if options[flag] is None
        ]
        if missing:
            raise CommandError(
                _("sync_peer add needs %(options)s.")
                % {"options": ", ".join(missing).replace("_", "-")}
            )
        peer = SyncPeer(
            sync_id=options["sync_id"],
            name=options["name"],
            store_code=options["store"],
            url=options["url"],
            sync_interval_minutes=options["interval"],
        )
        self._save(peer, options)

    def _update(self, options: dict[str, Any]) -> None:
        # Changing a server in place keeps its cursors; removing and adding it would start over.
        peer = self._peer(options, "update")
        fields = {
            "name": "name",
            "store": "store_code",
            "url": "url",
            "interval": "sync_interval_minutes",
        }
        for flag, field in fields.items():
            if options[flag] is not None:
                setattr(peer, field, options[flag])
        self._save(peer, options)

    def _save(self, peer: SyncPeer, options: dict[str, Any]) -> None:
        try:
            services.peer_save(peer=peer, by=command_user(options))
        except ValidationError as error:
            raise CommandError(validation_message(error)) from error

    def _peer(self, options: dict[str, Any], action: str) -> SyncPeer:
        if options["sync_id"] is None:
            raise CommandError(_("sync_peer %(action)s needs --sync-id.") % {"action": action})
        peer = SyncPeer.objects.filter(sync_id=options["sync_id"]).first()
        if peer is None:
            raise CommandError(
                _("No server with Sync ID %(sync_id)d is in the Sync with list.")
                % {"sync_id": options["sync_id"]}
            )
        return peer

    def _remove(self, options: dict[str, Any]) -> None:
        peer = self._peer(options, "remove")
        services.peer_delete(sync_id=peer.sync_id, by=command_user(options))
