"""Create realistic demo master data on the master; safe to run again."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from stores import demo, services
from stores.models import Item, Name, Store


class Command(BaseCommand):
    help = "Create demo stores, medicines, customers and suppliers on the master (idempotent)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--stores", type=int, default=0)
        parser.add_argument("--items", type=int, default=0)
        parser.add_argument("--names", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        if min(options["stores"], options["items"], options["names"]) < 0:
            raise CommandError("--stores, --items and --names must not be negative.")
        try:
            services.master_data_seed(
                stores=list(demo.demo_stores(options["stores"])),
                items=list(demo.demo_items(options["items"])),
                names=list(demo.demo_names(options["names"])),
            )
        except PermissionDenied as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Master data now: {Store.objects.count()} stores, {Item.objects.count()} items, "
            f"{Name.objects.count()} names."
        )
