"""Create realistic demo data: master data on the master, transactions where a store is hosted."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from msupply import identity
from stores import demo, services
from stores.models import Item, Name, Store, Transaction


class Command(BaseCommand):
    help = (
        "Create demo stores, medicines, customers and suppliers on the master, and with "
        "--transactions top up this site's own store to that many finalised transactions. "
        "Running it again adds nothing that is already there."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--stores", type=int, default=0)
        parser.add_argument("--items", type=int, default=0)
        parser.add_argument("--names", type=int, default=0)
        parser.add_argument(
            "--transactions",
            type=int,
            default=0,
            help="Finalised transactions wanted in the store this site hosts.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        counts = [options[key] for key in ("stores", "items", "names", "transactions")]
        if min(counts) < 0:
            raise CommandError(
                "--stores, --items, --names and --transactions must not be negative."
            )
        try:
            if any(counts[:3]):
                services.master_data_seed(
                    stores=list(demo.demo_stores(options["stores"])),
                    items=list(demo.demo_items(options["items"])),
                    names=list(demo.demo_names(options["names"])),
                )
            if options["transactions"]:
                self._transactions(options["transactions"])
        except PermissionDenied as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Master data now: {Store.objects.count()} stores, {Item.objects.count()} items, "
            f"{Name.objects.count()} names; {Transaction.objects.count()} transactions."
        )

    def _transactions(self, wanted: int) -> None:
        store = next((s for s in Store.objects.all() if identity.store_is_hosted_here(s.pk)), None)
        if store is None:
            raise CommandError(
                "This site hosts no store yet. On a satellite, run sync_now first: the master "
                "names the store this satellite hosts and sends its master data."
            )
        items = list(Item.objects.filter(active=True))
        names = list(Name.objects.filter(active=True))
        if not items or not names:
            raise CommandError(
                "There are no active items or names: seed them on the master and sync first."
            )
        existing = store.transactions.count()
        created = demo.demo_transactions(
            store=store,
            count=max(0, wanted - existing),
            items=items,
            names=names,
            seed=existing,
        )
        self.stdout.write(f"Created {created} transactions in store {store}.")
