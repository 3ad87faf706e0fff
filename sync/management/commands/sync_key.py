"""On the master: list satellites' keys; issue or reset one; disable or enable a satellite."""

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from msupply.commands import OperatorCommand
from sync import keys
from sync.models import SyncPeer
from sync.selectors import peer_key_status, peers_list, preferences_get


class Command(OperatorCommand):
    help = (
        "Satellites' sync keys, on the master: list; issue, reset, disable or enable --sync-id N "
        "--user ADMIN (an administrator with the permission to manage keys, named in the admin "
        "history). issue prints the key on stdout at every verbosity."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["list", "issue", "reset", "disable", "enable"])
        parser.add_argument("--sync-id", type=int)
        parser.add_argument("--user", help="User name of the administrator doing this.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not preferences_get().is_master:
            raise CommandError(_("Keys are issued by the master: run this on the master."))
        action = options["action"]
        if action != "list":
            self._change(action, options)
            if action == "issue" or self.verbosity < 1:
                return
        for peer in peers_list():
            self.stdout.write(f"{peer.sync_id}\t{peer.name}\t{peer_key_status(peer)}")

    def _change(self, action: str, options: dict[str, Any]) -> None:
        # Keys are a permission matter: the administrator is named, never assumed.
        if options["sync_id"] is None or not options["user"]:
            raise CommandError(_("%(action)s needs --sync-id and --user.") % {"action": action})
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(
                _("No user %(name)r exists on this server.") % {"name": options["user"]}
            )
        sync_id = options["sync_id"]
        try:
            if action == "issue":
                key = keys.peer_key_preissue(sync_id=sync_id, user=user)
                self.note(
                    _(
                        "Install this key on satellite %(sync_id)d with `manage.py sync_config "
                        "--key-stdin`; it is shown only now:"
                    )
                    % {"sync_id": sync_id}
                )
                self.stdout.write(key)
            elif action == "reset":
                keys.peer_key_reset(sync_id=sync_id, user=user)
            else:
                keys.peer_enabled_set(sync_id=sync_id, enabled=action == "enable", user=user)
        except SyncPeer.DoesNotExist:
            raise CommandError(
                _("Sync ID %(sync_id)d is not in the Sync with list.") % {"sync_id": sync_id}
            ) from None
        except PermissionDenied as error:
            raise CommandError(str(error)) from error
