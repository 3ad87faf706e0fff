"""Stores app: master data (stores, items, names) and store data (transactions, stock)."""

from django.apps import AppConfig


class StoresConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "stores"
    verbose_name = "Stores and stock"
