"""Sync app: preferences, the Sync-with list, change capture and the sync protocol."""

from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate, pre_migrate
from django.utils.translation import gettext_lazy as _


class SyncConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sync"
    verbose_name = _("Synchronisation")

    def ready(self) -> None:
        from msupply import identity

        from . import selectors
        from .capture import register_sqlite_function, triggers_reinstall, triggers_remove_sqlite

        # sync answers "who is this site" for the apps below it (msupply.identity).
        identity.provider_set(selectors)

        connection_created.connect(register_sqlite_function, dispatch_uid="sync_source_site")
        pre_migrate.connect(triggers_remove_sqlite, sender=self, dispatch_uid="sync_triggers_off")
        post_migrate.connect(triggers_reinstall, sender=self, dispatch_uid="sync_triggers")
        post_migrate.connect(_rejected_retry, sender=self, dispatch_uid="sync_rejected_retry")


def _rejected_retry(using: str = "default", **kwargs: object) -> None:
    """After an upgrade, try the records the master set aside again: a fix may let them in."""
    from .rejects import rejected_retry_all

    rejected_retry_all(using=using)
