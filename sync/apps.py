"""Sync app: preferences, the Sync-with list, change capture and the sync protocol."""

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class SyncConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sync"
    verbose_name = "Synchronisation"

    def ready(self) -> None:
        from .capture import register_sqlite_function

        connection_created.connect(register_sqlite_function, dispatch_uid="sync_source_site")
