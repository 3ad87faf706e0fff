"""Sync app: preferences, the Sync-with list, change capture and the sync protocol."""

from django.apps import AppConfig


class SyncConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "sync"
    verbose_name = "Synchronisation"
