"""List, add or remove servers in this site's Sync with list."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from sync import services
from sync.management.output import validation_message
from sync.models import SyncPeer
from sync.selectors import peers_list


class Command(BaseCommand):
    help = "Manage the Sync with list: list, add --sync-id --name --store --url, remove --sync-id."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["list", "add", "remove"])
        parser.add_argument("--sync-id", type=int)
        parser.add_argument("--name")
        parser.add_argument("--store", help="Code of the store that the server hosts.")
        parser.add_argument("--url", help="Full URL of the server.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "add":
            self._add(options)
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
        )
        try:
            services.peer_save(peer=peer)
        except ValidationError as error:
            raise CommandError(validation_message(error)) from error

    def _remove(self, options: dict[str, Any]) -> None:
        if options["sync_id"] is None:
            raise CommandError("sync_peer remove needs --sync-id.")
        try:
            services.peer_delete(sync_id=options["sync_id"])
        except SyncPeer.DoesNotExist as error:
            raise CommandError(
                f"No server with Sync ID {options['sync_id']} is in the Sync with list."
            ) from error
