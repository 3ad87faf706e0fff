"""Create realistic demo data: master data on the master, transactions where a store is hosted."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from msupply import identity
from msupply.commands import OperatorCommand
from msupply.progress import Progress
from stores import demo, services
from stores.models import Item, Name, Store, Transaction

# Master data goes in bulk, this many records a statement; transactions go through the
# services one by one, so the bar moves every few of them (a multiple of 3 keeps
# demo_transactions' two receipts to one issue).
MASTER_DATA_CHUNK = 1000
TRANSACTIONS_CHUNK = 12


class Command(OperatorCommand):
    help = (
        "Create demo stores, medicines, customers and suppliers on the master, and with "
        "--transactions top up this site's own store to that many finalised transactions. "
        "Running it again adds nothing that is already there. A terminal shows a progress bar; "
        "-v 0 prints only errors."
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
                _("--stores, --items, --names and --transactions must not be negative.")
            )
        try:
            with self.progress() as progress:
                if any(counts[:3]):
                    self._master_data(options, progress)
                if options["transactions"]:
                    self._transactions(options["transactions"], progress)
        except PermissionDenied as error:
            raise CommandError(str(error)) from error
        self.say(
            _(
                "Master data now: %(stores)d stores, %(items)d items, %(names)d names; "
                "%(transactions)d transactions."
            )
            % {
                "stores": Store.objects.count(),
                "items": Item.objects.count(),
                "names": Name.objects.count(),
                "transactions": Transaction.objects.count(),
            }
        )

    def _master_data(self, options: dict[str, Any], progress: Progress) -> None:
        stores = list(demo.demo_stores(options["stores"]))
        items = list(demo.demo_items(options["items"]))
        names = list(demo.demo_names(options["names"]))
        total = len(stores) + len(items) + len(names)
        done = 0
        # Stores first, in full: each store's trading name is made with its store.
        services.master_data_seed(stores=stores, items=[], names=[])
        done += len(stores)
        for start in range(0, max(len(items), len(names)), MASTER_DATA_CHUNK):
            chunk_items = items[start : start + MASTER_DATA_CHUNK]
            chunk_names = names[start : start + MASTER_DATA_CHUNK]
            services.master_data_seed(stores=[], items=chunk_items, names=chunk_names)
            done += len(chunk_items) + len(chunk_names)
            progress(
                _("Master data: %(done)d of %(total)d records.") % {"done": done, "total": total},
                done=done,
                total=total,
                label=_("Master data"),
            )

    def _transactions(self, wanted: int, progress: Progress) -> None:
        store = next((s for s in Store.objects.all() if identity.store_is_hosted_here(s.pk)), None)
        if store is None:
            raise CommandError(
                _(
                    "This site hosts no store yet. On a satellite, run sync_now first: the master "
                    "names the store this satellite hosts and sends its master data."
                )
            )
        items = list(Item.objects.filter(active=True))
        names = list(Name.objects.filter(active=True))
        if not items or not names:
            raise CommandError(
                _("There are no active items or names: seed them on the master and sync first.")
            )
        existing = store.transactions.count()
        missing = max(0, wanted - existing)
        created = 0
        while created < missing:
            made = demo.demo_transactions(
                store=store,
                count=min(TRANSACTIONS_CHUNK, missing - created),
                items=items,
                names=names,
                seed=existing + created,
            )
            if not made:
                break
            created += made
            progress(
                _("Transactions: %(done)d of %(total)d.") % {"done": created, "total": missing},
                done=created,
                total=missing,
                label=_("Transactions"),
                unit=_("transactions"),
            )
        self.say(
            _("Created %(count)d transactions in store %(store)s.")
            % {"count": created, "store": store}
        )
