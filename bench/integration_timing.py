"""In-process timing of integration by batch size: a master's of pushed batches, or with
`--pull` a satellite's of the pages of its initial pull.

A push builds `--transactions` invoices of 10 lines, each line with its stock line, as one
satellite's wire changesets, then for each batch size integrates them the way a push does (check
every row, ownership, line quantities, changeset_apply_isolated), one committed transaction per
batch. A pull applies 20,000 new items and 5,000 names page by page with changeset_apply. Each
prints records/s with the load average. Needs a migrated database of its own (it empties the
synced tables but the timing store):

    createdb -h 127.0.0.1 -U postgres msupply_timing
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/msupply_timing DEBUG=true
    .venv/bin/python manage.py migrate
    .venv/bin/python bench/integration_timing.py --sizes 2000 5000 10000
"""

import argparse
import datetime
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# The code under test is the checkout this is run from.
sys.path.insert(0, str(Path.cwd()))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "msupply.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402

from stores.models import Item, Name, StockLine, Store, Transaction, TransactionLine  # noqa: E402
from sync.capture import changes_from  # noqa: E402
from sync.changes import ChangeSet  # noqa: E402
from sync.integration import (  # noqa: E402
    changeset_apply,
    changeset_apply_isolated,
    changeset_check_line_quantities,
    changeset_check_ownership,
)
from sync.models import ChangeLog  # noqa: E402
from sync.registry import TABLES_BY_MODEL  # noqa: E402

LINES_PER_TRANSACTION = 10


def records(store: Store, items: list[Item], count: int) -> list[tuple[str, list[Any]]]:
    """(table, wire row) in the order a satellite's change log would push them."""
    rng = random.Random(7)
    today = datetime.date(2026, 12, 1)
    out: list[tuple[str, list[Any]]] = []
    tables = {model: TABLES_BY_MODEL[model].name for model in TABLES_BY_MODEL}
    for number in range(1, count + 1):
        transaction_id = uuid.uuid4().hex
        out.append(
            (
                tables[Transaction],
                [transaction_id, store.pk.hex, "supplier_invoice", number, None]
                + [str(today), "finalised", None, None],
            )
        )
        for item in rng.sample(items, LINES_PER_TRANSACTION):
            batch, expiry = f"B{number}", str(today + datetime.timedelta(days=rng.randint(30, 900)))
            quantity = rng.randint(1, 1000)
            out.append(
                (
                    tables[TransactionLine],
                    [uuid.uuid4().hex, transaction_id, item.pk.hex, batch, expiry, quantity]
                    + [f"{rng.randint(5, 300) / 100:.2f}", "0.00"],
                )
            )
            out.append(
                (
                    tables[StockLine],
                    [uuid.uuid4().hex, store.pk.hex, item.pk.hex, batch, expiry, quantity],
                )
            )
    return out


def master_data() -> list[tuple[str, list[Any]]]:
    """(table, wire row) of the master data an initial pull brings."""
    items, names = TABLES_BY_MODEL[Item].name, TABLES_BY_MODEL[Name].name
    out: list[tuple[str, list[Any]]] = [
        (items, [uuid.uuid4().hex, f"P{n:06d}", f"Pulled item {n}", "each", True])
        for n in range(20_000)
    ]
    out += [
        (names, [uuid.uuid4().hex, f"PN{n:05d}", f"Pulled name {n}", "customer", True, None])
        for n in range(5_000)
    ]
    return out


def pull(pages: list[bytes]) -> None:
    for page in pages:
        changeset = ChangeSet.from_wire(json.loads(page)).decode()
        with transaction.atomic(durable=True):
            changeset_apply(changeset=changeset, source_site=1)


def wire_pages(rows: list[tuple[str, list[Any]]], size: int) -> list[bytes]:
    pages = []
    for start in range(0, len(rows), size):
        upserts: dict[str, list[list[Any]]] = {}
        for name, row in rows[start : start + size]:
            upserts.setdefault(name, []).append(row)
        fields = {table.name: table.field_names for table in TABLES_BY_MODEL.values()}
        changes = {
            "upserts": [{"table": n, "fields": fields[n], "rows": r} for n, r in upserts.items()],
            "deletes": [],
        }
        pages.append(json.dumps(changes).encode())
    return pages


def integrate(pages: list[bytes], store: Store) -> None:
    for page in pages:
        changeset = ChangeSet.from_wire(json.loads(page)).decode()
        with transaction.atomic(durable=True):
            changeset_check_ownership(changeset=changeset, store_id=store.pk)
            changeset_check_line_quantities(changeset=changeset)
            with changes_from(2):
                changeset_apply_isolated(changeset=changeset, source_site=2, held={})


def empty() -> None:
    for model in (StockLine, TransactionLine, Transaction):
        model.objects.all().delete()
    Name.objects.filter(code__startswith="PN").delete()
    Item.objects.filter(code__startswith="P").delete()
    ChangeLog.objects.all().delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pull", action="store_true", help="Time an initial pull's pages.")
    options = parser.parse_args()
    store, _ = Store.objects.get_or_create(code="TIME", defaults={"name": "Timing store"})
    if Item.objects.count() < 500:
        Item.objects.bulk_create(
            Item(code=f"T{n:05d}", name=f"Item {n}", unit="each") for n in range(500)
        )
    items = list(Item.objects.all()[:500])
    rows = master_data() if options.pull else records(store, items, options.transactions)
    for size in options.sizes:
        pages = wire_pages(rows, size)
        for _ in range(options.repeats):
            empty()
            started = time.perf_counter()
            if options.pull:
                pull(pages)
            else:
                integrate(pages, store)
            seconds = time.perf_counter() - started
            print(
                json.dumps(
                    {
                        "database": connection.vendor,
                        "workload": "pull" if options.pull else "push",
                        "batch_size": size,
                        "records": len(rows),
                        "seconds": round(seconds, 3),
                        "records_per_second": round(len(rows) / seconds),
                        "load_average_1m": os.getloadavg()[0],
                    }
                ),
                flush=True,
            )
    empty()


if __name__ == "__main__":
    main()
