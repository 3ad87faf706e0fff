"""List, add, change or remove servers in this site's Sync with list."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from sync import services
from sync.management.output import validation_message
from sync.models import SyncPeer
from sync.selectors import peers_list


class Command(BaseCommand):
    help = (
        "Manage the Sync with list: list; add --sync-id --name --store --url; update --sync-id "
        "with any of --name --store --url (keeps the sync state); remove --sync-id."
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

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "add":
            self._add(options)
        elif options["action"] == "update":
            self._update(options)
        elif options["action"] == "remove":
            self._remove(options)
        for peer in peers_list():
            self.stdout.write(f"{peer.sync_id}\t{peer.name}\t{peer.store_code}\t{peer.url}")

    def _add(self, options: dict[str, Any]) -> None:
        missing = [
            f"--{flag}" for flag in ("sync_id", "name", "store", "url") if options[flag] is None
        ]
        if missing:
            raise CommandError(f"sync_peer add needs {', '.join(missing).replace('_', '-')}.")
        peer = SyncPeer(
            sync_id=options["sync_id"],
            name=options["name"],
            store_code=options["store"],
            url=options["url"],
            sync_interval_minutes=options["interval"],
        )
        try:
            services.peer_save(peer=peer)
        except ValidationError as error:
            raise CommandError(validation_message(error)) from error

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
        try:
            services.peer_save(peer=peer)
        except ValidationError as error:
            raise CommandError(validation_message(error)) from error

    def _peer(self, options: dict[str, Any], action: str) -> SyncPeer:
        if options["sync_id"] is None:
            raise CommandError(f"sync_peer {action} needs --sync-id.")
        peer = SyncPeer.objects.filter(sync_id=options["sync_id"]).first()
        if peer is None:
            raise CommandError(
                f"No server with Sync ID {options['sync_id']} is in the Sync with list."
            )
        return peer

    def _remove(self, options: dict[str, Any]) -> None:
        services.peer_delete(sync_id=self._peer(options, "remove").sync_id)
